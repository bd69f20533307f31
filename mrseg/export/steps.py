"""The pre-step (resize, normalize, pad onto the canvas) and post-step (scale boxes back, paste masks, decode
keypoints) around an exported graph; the same numerics as `MaskRCNN.transform`, `RoIHeads` and
`MaskRCNN.postprocess`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mrseg.export.spec import GraphSpec, round_up
from mrseg.model.keypoint_head import heatmaps_to_keypoints
from mrseg.model.postprocess import paste_masks, scale_boxes, scale_keypoints
from mrseg.model.transform import resize_args


def preprocess(images: list[Tensor], spec: GraphSpec) -> tuple[Tensor, Tensor]:
    """images: up to `spec.batch` float [3, h, w] RGB in 0..1 -> (batch float32 [batch, 3, H, W], resized
    sizes float32 [batch, 2]). H x W: the largest resized image rounded up to `spec.size_divisible`, as the
    model pads a batch (a format-1 file: its fixed canvas). Missing batch slots stay empty (size 1 x 1; their
    output is dropped)."""
    if not 0 < len(images) <= spec.batch:
        raise ValueError(f"preprocess: got {len(images)} images for a graph that takes {spec.batch}")
    mean = torch.tensor(spec.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32)[:, None, None]
    resized = []
    for i, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"images[{i}]: expected a float tensor [3, H, W], got shape {tuple(image.shape)}"
            )
        image = (image.detach().to("cpu", torch.float32) - mean) / std
        scale = spec.resize_scale(int(image.shape[-2]), int(image.shape[-1]))
        resize = resize_args(int(image.shape[-2]), int(image.shape[-1]), scale)
        image = F.interpolate(image[None], mode="bilinear", align_corners=False, **resize)
        resized.append(image[0])
    if spec.dynamic:
        height = round_up(max(r.shape[-2] for r in resized), spec.size_divisible)
        width = round_up(max(r.shape[-1] for r in resized), spec.size_divisible)
    else:
        height, width = spec.height, spec.width
    canvas = torch.zeros((spec.batch, 3, height, width), dtype=torch.float32)
    sizes = torch.ones((spec.batch, 2), dtype=torch.float32)
    for i, image in enumerate(resized):
        h, w = image.shape[-2:]
        canvas[i, :, :h, :w] = image
        sizes[i, 0], sizes[i, 1] = h, w
    return canvas, sizes


def postprocess(
    outputs: dict[str, Tensor],
    sizes: Tensor,
    original_sizes: list[tuple[int, int]],
    mask_threshold: float = 0.5,
) -> list[dict[str, Tensor]]:
    """Graph outputs by name (see GraphSpec) -> per original image the model's eval output (`MaskRCNN`), with
    "mask_probs" float [D, 1, 28, 28] (what the masks were pasted from) next to "masks"."""
    boxes, image_index = outputs["boxes"], outputs["image_index"]
    results = []
    for i, original in enumerate(original_sizes):
        sel = image_index == i
        resized = (int(sizes[i, 0]), int(sizes[i, 1]))
        b = scale_boxes(boxes[sel], resized, original)
        result = {
            "boxes": b,
            "scores": outputs["scores"][sel],
            "labels": outputs["labels"][sel].to(torch.int64),
        }
        if "mask_probs" in outputs:
            probs = outputs["mask_probs"][sel]
            result["masks"] = paste_masks(probs, b, original, threshold=mask_threshold)[:, None]
            result["mask_probs"] = probs
        if "keypoint_heatmaps" in outputs:
            keypoints, scores = heatmaps_to_keypoints(outputs["keypoint_heatmaps"][sel], boxes[sel])
            result["keypoints"] = scale_keypoints(keypoints, resized, original)
            result["keypoints_scores"] = scores
        results.append(result)
    return results
