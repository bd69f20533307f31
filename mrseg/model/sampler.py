"""Samples a fixed-size, class-balanced minibatch of positives and negatives per image."""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedSampler:
    """Picks at most `batch_size * positive_fraction` positives at random, and fills the rest with negatives.

    Labels per element: -1 ignore, 0 negative, >= 1 positive. A very large `batch_size` keeps every candidate
    (used by tests to make the losses deterministic).
    """

    def __init__(self, batch_size: int, positive_fraction: float):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"BalancedSampler: positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size = batch_size
        self.positive_fraction = positive_fraction

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """labels [N] int -> (positive, negative) bool masks [N] of the sampled elements."""
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        num_pos = min(positive.numel(), int(self.batch_size * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size - num_pos)
        pos_idx = positive[torch.randperm(positive.numel(), device=labels.device)[:num_pos]]
        neg_idx = negative[torch.randperm(negative.numel(), device=labels.device)[:num_neg]]
        pos_mask = torch.zeros_like(labels, dtype=torch.bool)
        neg_mask = torch.zeros_like(labels, dtype=torch.bool)
        pos_mask[pos_idx] = True
        neg_mask[neg_idx] = True
        return pos_mask, neg_mask
