"""Assigns each prediction (anchor or proposal) to the ground-truth box it overlaps most, by IoU threshold."""

from __future__ import annotations

import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def box_iou_batched(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1 [..., M, 4] with boxes2 [..., N, 4] (xyxy; leading dims broadcast) -> [..., M, N], with
    torchvision.ops.box_iou's arithmetic (the same values for one image), for many images in one call."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)


def pad_boxes(boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-image boxes [B_i, 4] -> (padded [N, max B_i, 4] with zero boxes, valid bool [N, max B_i])."""
    padded = torch.nn.utils.rnn.pad_sequence(boxes, batch_first=True)
    counts = torch.tensor([b.shape[0] for b in boxes], device=padded.device)
    return padded, torch.arange(padded.shape[1], device=padded.device) < counts[:, None]


class Matcher:
    """For a quality matrix [M ground truths, N predictions] returns, per prediction, the index of its best
    ground truth when that IoU >= `high`, `BELOW_LOW_THRESHOLD` (-1, background) when it is < `low`, and
    `BETWEEN_THRESHOLDS` (-2, ignored) in between. With `allow_low_quality_matches`, every prediction that
    ties for the highest IoU with some ground truth is matched to its own best ground truth even below
    `high`, so that each ground truth gets at least one match (the RPN's rule in Faster R-CNN).
    """

    def __init__(self, high: float, low: float, allow_low_quality_matches: bool = False):
        if low > high:
            raise ValueError(f"Matcher: low threshold {low} must be <= high threshold {high}")
        self.high = high
        self.low = low
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: Tensor) -> Tensor:
        """quality [..., M, N] (M >= 1 ground truths) -> matches int64 [..., N] in {-2, -1, 0..M-1}.

        Leading dims (images) are matched independently; a ground-truth row whose qualities are all
        negative (padding) matches nothing and takes no part in the low-quality rule."""
        if quality.shape[-2] == 0:
            raise ValueError("Matcher: no ground-truth boxes; handle images without objects before matching")
        best_quality, matches = quality.max(dim=-2)
        all_matches = matches.clone()
        matches[best_quality < self.low] = BELOW_LOW_THRESHOLD
        matches[(best_quality >= self.low) & (best_quality < self.high)] = BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(dim=-1, keepdim=True).values
            ties = (quality == best_per_gt) & (best_per_gt >= 0)
            matches = torch.where(ties.any(dim=-2), all_matches, matches)
        return matches
