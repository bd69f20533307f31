"""Inference post-processing: per-class boxes -> score threshold, class-aware NMS, top-k; and mask paste-back.

`paste_masks` reproduces torchvision's `paste_masks_in_image` (pad the 28x28 mask by one pixel, grow the box
to match, round it to integers, bilinear-resize the mask into that box) but vectorised over chunks of similar
box sizes, computing only the box windows (`paste_mask_crops`), never a full-size float image per mask.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, remove_small_boxes

from mrseg.model.box_coder import BoxCoder, clip_boxes


def box_detections(
    class_logits: Tensor,
    box_deltas: Tensor,
    proposals: list[Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """class_logits [R, K+1], box_deltas [R, 4(K+1)], proposals per image [R_i, 4]
    -> per image (boxes [D, 4], scores [D], labels int64 [D] in 1..K), sorted by score, D <=
    detections_per_img.
    """
    num_classes = class_logits.shape[-1]
    pred_boxes = box_coder.decode(box_deltas, torch.cat(proposals, dim=0))
    pred_scores = F.softmax(class_logits.float(), -1)  # float32 under autocast too: scores meet thresholds
    counts = [p.shape[0] for p in proposals]
    results = []
    for boxes, scores, image_size in zip(
        pred_boxes.split(counts), pred_scores.split(counts), image_sizes, strict=True
    ):
        boxes = clip_boxes(boxes, image_size)
        labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = torch.where(scores >= score_thresh)[0]  # the one rule: a score equal to the threshold passes
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        results.append((boxes[keep], scores[keep], labels[keep]))
    return results


def _resize_ratios(
    from_size: tuple[int, int], to_size: tuple[int, int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(to_h / from_h, to_w / from_w) as float32 tensors, computed as torchvision's transform does."""
    return tuple(
        torch.tensor(t, dtype=torch.float32, device=device)
        / torch.tensor(f, dtype=torch.float32, device=device)
        for t, f in zip(to_size, from_size, strict=True)
    )


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """boxes [N, 4] xyxy in an image of from_size (h, w) -> the same boxes in an image of to_size (h, w)."""
    ratio_h, ratio_w = _resize_ratios(from_size, to_size, boxes.device)
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack((x0 * ratio_w, y0 * ratio_h, x1 * ratio_w, y1 * ratio_h), dim=1)


def scale_keypoints(keypoints: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """keypoints [N, P, 3] (x, y, v) in an image of from_size (h, w) -> the same in an image of to_size;
    v is kept."""
    ratio_h, ratio_w = _resize_ratios(from_size, to_size, keypoints.device)
    x, y, v = keypoints.unbind(-1)
    return torch.stack((x * ratio_w, y * ratio_h, v), dim=-1)


def _paste_boxes(boxes: Tensor, mask_size: int, padding: int) -> Tensor:
    """The integer boxes [N, 4] torchvision pastes the padded masks into (box grown by (M + 2p) / M)."""
    scale = float(mask_size + 2 * padding) / mask_size
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)
    return grown.to(torch.int64)


def _resize_taps(in_size: int, out_sizes: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear (align_corners=False) taps along one axis for outputs of out_sizes[n] samples, padded to
    `length`: (i0, i1) int64 [N, length] source indices and (l0, l1) float32 [N, length] weights, computed
    with the same float32 operations as PyTorch's upsample_bilinear2d so that values tie-break identically at
    the threshold."""
    pos = torch.arange(length, dtype=torch.float32, device=out_sizes.device)
    out_sizes = out_sizes.to(torch.float32)
    # a true float32 division (`int / tensor` would multiply by the reciprocal and round differently)
    scale = torch.full_like(out_sizes, float(in_size)) / out_sizes
    # the kernel's `scale * (i + 0.5) - 0.5` rounds once (fused multiply-add): emulate it in float64
    src = (scale.double()[:, None] * (pos.double()[None, :] + 0.5) - 0.5).to(torch.float32).clamp(min=0)
    i0 = src.floor().to(torch.int64).clamp(max=in_size - 1)
    l1 = (src - i0).clamp(0, 1)
    i1 = i0 + (i0 < in_size - 1).to(torch.int64)
    return i0, i1, 1 - l1, l1


class MaskCropChunk(NamedTuple):
    """Pasted masks of a few instances, each in the pixel window of its paste box.

    index int64 [n]: which instances (rows of the `masks` given to `paste_mask_crops`); crops bool [n, h, w]:
    instance k's mask in rows/columns 0..sizes[k] (beyond that, and outside the image, False); origins int64
    [n, 2]: (x, y) of each window's top-left pixel in the image (may be < 0); sizes int64 [n, 2]: (w, h).
    """

    index: Tensor
    crops: Tensor
    origins: Tensor
    sizes: Tensor


def paste_masks(
    masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    threshold: float = 0.5,
    padding: int = 1,
    chunk_pixels: int = 1 << 24,
) -> Tensor:
    """Pastes soft masks into the image and thresholds them.

    masks: [N, M, M] or [N, 1, M, M] probabilities in the frame of `boxes`; boxes: [N, 4] xyxy image pixels;
    image_size: (H, W). Returns bool [N, H, W]: True where the resized probability is > threshold.
    `chunk_pixels` bounds the float work area (masks per chunk x largest box area in the chunk).
    """
    height, width = image_size
    out = torch.zeros((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    for chunk in paste_mask_crops(
        masks, boxes, image_size, threshold=threshold, padding=padding, chunk_pixels=chunk_pixels
    ):
        n_i, y_i, x_i = torch.where(chunk.crops)
        ys = chunk.origins[n_i, 1] + y_i
        xs = chunk.origins[n_i, 0] + x_i
        out[chunk.index[n_i], ys, xs] = True
    return out


def paste_mask_crops(
    masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    threshold: float = 0.5,
    padding: int = 1,
    chunk_pixels: int = 1 << 24,
) -> list[MaskCropChunk]:
    """`paste_masks` without the full-size output: each mask only in the window of its paste box.

    Same arguments and the same pixels as `paste_masks`, returned as chunks of instances with similar box
    sizes (see `MaskCropChunk`). A caller that encodes masks per instance (RLE, polygons) or copies them off
    a GPU moves box-sized crops instead of N full-size images.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.shape[0] == 0:
        return []
    mask_size = masks.shape[-1]
    padded = F.pad(masks.to(torch.float32), (padding,) * 4)
    in_size = mask_size + 2 * padding
    ibox = _paste_boxes(boxes.to(torch.float32), mask_size, padding)
    box_w = (ibox[:, 2] - ibox[:, 0] + 1).clamp(min=1)
    box_h = (ibox[:, 3] - ibox[:, 1] + 1).clamp(min=1)

    # chunks of masks with similar box sizes, so padding every box in a chunk to the largest wastes little
    order = torch.argsort(box_w * box_h)
    widths, heights = box_w[order].tolist(), box_h[order].tolist()
    chunks = []
    start = 0
    while start < len(widths):
        stop, max_w, max_h = start + 1, widths[start], heights[start]
        while stop < len(widths):
            w, h = max(max_w, widths[stop]), max(max_h, heights[stop])
            if (stop + 1 - start) * w * h > chunk_pixels:
                break
            stop, max_w, max_h = stop + 1, w, h
        idx = order[start:stop]
        crops = _paste_chunk(padded[idx], ibox[idx], max_w, max_h, image_size, in_size, threshold)
        sizes = torch.stack((box_w[idx], box_h[idx]), dim=1)
        chunks.append(MaskCropChunk(idx, crops, ibox[idx, :2], sizes))
        start = stop
    return chunks


def _paste_chunk(
    masks: Tensor,
    ibox: Tensor,
    max_w: int,
    max_h: int,
    image_size: tuple[int, int],
    in_size: int,
    threshold: float,
) -> Tensor:
    """masks float [n, in, in] (padded), ibox int64 [n, 4] -> bool [n, max_h, max_w]: each mask resized into
    its box window, thresholded, False past the box and outside the image."""
    height, width = image_size
    n = masks.shape[0]
    box_w = ibox[:, 2] - ibox[:, 0] + 1
    box_h = ibox[:, 3] - ibox[:, 1] + 1
    y0, y1, ly0, ly1 = _resize_taps(in_size, box_h.clamp(min=1), max_h)  # [n, max_h]
    x0, x1, lx0, lx1 = _resize_taps(in_size, box_w.clamp(min=1), max_w)  # [n, max_w]

    # along x first, then y: the order of operations of PyTorch's bilinear kernel
    cols0 = masks.gather(2, x0[:, None, :].expand(n, in_size, max_w))
    cols1 = masks.gather(2, x1[:, None, :].expand(n, in_size, max_w))
    along_x = lx0[:, None, :] * cols0 + lx1[:, None, :] * cols1  # [n, in, max_w]
    rows0 = along_x.gather(1, y0[:, :, None].expand(n, max_h, max_w))
    rows1 = along_x.gather(1, y1[:, :, None].expand(n, max_h, max_w))
    value = ly0[:, :, None] * rows0 + ly1[:, :, None] * rows1  # [n, max_h, max_w]
    ys = ibox[:, 1:2] + torch.arange(max_h, device=masks.device)[None, :]  # [n, max_h]
    xs = ibox[:, 0:1] + torch.arange(max_w, device=masks.device)[None, :]  # [n, max_w]
    y_ok = (ys >= 0) & (ys < height) & (ys <= ibox[:, 3:4])
    x_ok = (xs >= 0) & (xs < width) & (xs <= ibox[:, 2:3])
    return (value > threshold) & y_ok[:, :, None] & x_ok[:, None, :]
