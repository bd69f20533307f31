"""Assigns each prediction (anchor or proposal) to the ground-truth box it overlaps most, by IoU
thresholds."""

from __future__ import annotations

import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class Matcher:
    """IoU matcher.

    For a quality matrix [M ground truths, N predictions] returns, per prediction, the index of its best
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
        """quality [M, N] (M >= 1 ground truths) -> matches int64 [N] in {-2, -1, 0..M-1}."""
        if quality.shape[0] == 0:
            raise ValueError("Matcher: no ground-truth boxes; handle images without objects before matching")
        best_quality, matches = quality.max(dim=0)
        all_matches = matches.clone()
        matches[best_quality < self.low] = BELOW_LOW_THRESHOLD
        matches[(best_quality >= self.low) & (best_quality < self.high)] = BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(dim=1).values
            _, pred_inds = torch.where(quality == best_per_gt[:, None])
            matches[pred_inds] = all_matches[pred_inds]
        return matches
