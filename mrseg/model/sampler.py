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
        return _random_subset(positive, keys, num_pos), _random_subset(negative, keys, num_neg)


def _random_subset(candidates: Tensor, keys: Tensor, count: Tensor) -> Tensor:
    """Per row, the `count` candidates with the smallest random keys: a uniformly random subset.
    candidates bool [..., N], keys [..., N] in [0, 1), count [..., 1] -> bool [..., N]."""
    order = torch.where(candidates, keys, 2.0).argsort(dim=-1)  # candidates first, in random order
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    return candidates & (rank < count)
