"""Samples a fixed-size, class-balanced minibatch of positives and negatives per image."""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedSampler:
    """Picks at most `batch_size * positive_fraction` positives at random, and fills the rest with negatives.

    Labels per element: -1 ignore, 0 negative, >= 1 positive. A very large `batch_size` keeps every candidate
    (used by tests to make the losses deterministic). Labels [..., N] sample each row (image) on its own, in
    one pass for all rows: every subset of the allowed size is equally likely, as with torchvision's
    randperm-per-image sampler.
    """

    def __init__(self, batch_size: int, positive_fraction: float):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"BalancedSampler: positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size = batch_size
        self.positive_fraction = positive_fraction

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """labels [..., N] int -> (positive, negative) bool masks [..., N] of the sampled elements."""
        positive = labels >= 1
        negative = labels == 0
        num_pos = positive.sum(-1, keepdim=True).clamp(max=int(self.batch_size * self.positive_fraction))
        num_neg = torch.minimum(negative.sum(-1, keepdim=True), self.batch_size - num_pos)
        keys = torch.rand(labels.shape, device=labels.device)
        max_pos = min(int(self.batch_size * self.positive_fraction), labels.shape[-1])
        max_neg = min(self.batch_size, labels.shape[-1])
        return (
            _random_subset(positive, keys, num_pos, max_pos),
            _random_subset(negative, keys, num_neg, max_neg),
        )


def _random_subset(candidates: Tensor, keys: Tensor, count: Tensor, bound: int) -> Tensor:
    """Per row, the `count` candidates with the smallest random keys: a uniformly random subset.
    candidates bool [..., N], keys [..., N] in [0, 1), count [..., 1] <= bound -> bool [..., N]. A partial
    sort (topk of `bound`) instead of a full one: a row of RPN anchors has thousands of candidates."""
    ranked = torch.where(candidates, keys, 2.0)  # non-candidates after every candidate
    idx = ranked.topk(bound, dim=-1, largest=False, sorted=True).indices
    take = torch.arange(bound, device=idx.device) < count
    return torch.zeros_like(candidates).scatter_(-1, idx, take)
