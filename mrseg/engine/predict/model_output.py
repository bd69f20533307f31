"""One image's raw model output -> the numpy fields of `Detections`: the score and class filters applied, mask
probabilities pasted into the image as box-sized crops (no full-size mask per instance)."""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import torch

from mrseg.outputs.mask_crop import CroppedMasks


def detection_arrays(
    o: dict[str, torch.Tensor],
    image_size: tuple[int, int],
    *,
    score: float,
    keep_labels: Set[int] | None,
    mask_threshold: float,
    crops: bool,
) -> dict[str, np.ndarray | CroppedMasks | None]:
    """`o`: boxes [D, 4] (image pixels), scores [D], labels [D], and `mask_probs` [D, 1, M, M] in box frames
    or `masks` [D, (1,) H, W], `keypoints` [D, P, 3] and `keypoints_scores` [D, P] when the model has them.
    Keeps the detections scoring at least `score` whose label is in `keep_labels` (all when None); masks come
    back as `CroppedMasks` when `crops`, else bool [N, H, W]."""
    keep = o["scores"] >= score
    if keep_labels is not None:
        wanted = torch.tensor(sorted(keep_labels), device=o["labels"].device)
        keep &= torch.isin(o["labels"], wanted)
    all_kept = bool(keep.all())  # the model already dropped what scores under `score`: usually no copy

    def kept(t: torch.Tensor) -> torch.Tensor:
        return t if all_kept else t[keep]

    boxes = kept(o["boxes"])
    res = {
        "boxes": boxes.float().cpu().numpy().reshape(-1, 4),
        "scores": kept(o["scores"]).float().cpu().numpy(),
        "labels": kept(o["labels"]).to(torch.int64).cpu().numpy(),
        "masks": None,
        "keypoints": None,
        "keypoint_scores": None,
    }
    if o.get("keypoints") is not None:
        res["keypoints"] = kept(o["keypoints"]).float().cpu().numpy()
        res["keypoint_scores"] = kept(o["keypoints_scores"]).float().cpu().numpy()
    if o.get("mask_probs") is not None:
        masks = cropped_masks(kept(o["mask_probs"]), boxes, image_size, mask_threshold)
        res["masks"] = masks if crops else np.asarray(masks)
    elif o.get("masks") is not None:
        masks = kept(o["masks"])
        if masks.dim() == 4:
            masks = masks[:, 0]
        if masks.dtype != torch.bool:
            masks = masks > 0.5
        res["masks"] = masks.cpu().numpy()
    return res


def cropped_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size, threshold: float) -> CroppedMasks:
    """Mask probabilities [N, 1, M, M] in the frame of `boxes` [N, 4] (image pixels) -> the pasted,
    thresholded masks as box-sized crops on the CPU (one copy per chunk of similar box sizes, not one per
    instance)."""
    from mrseg.model.postprocess import paste_mask_crops

    height, width = int(image_size[0]), int(image_size[1])
    crops: list = [None] * probs.shape[0]
    origins = np.zeros((probs.shape[0], 2), np.int64)
    for chunk in paste_mask_crops(probs, boxes, (height, width), threshold=threshold):
        index, windows = chunk.index.cpu().numpy(), chunk.crops.cpu().numpy()
        corners, sizes = chunk.origins.cpu().numpy(), chunk.sizes.cpu().numpy()
        for k, i in enumerate(index):
            crops[i] = windows[k, : sizes[k, 1], : sizes[k, 0]]
            origins[i] = corners[k]
    return CroppedMasks.from_crops(crops, origins, height, width)
