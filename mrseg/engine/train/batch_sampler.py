"""Batches of (index, augmentation seed) as a pure function of (seed, iteration, rank): resumable exactly.

Each epoch is a seeded permutation of the dataset; with W processes, rank r takes every W-th index of it (the
permutation is padded by wrapping around, like torch's DistributedSampler, so every rank gets the same count).
The stream of a rank is cut into batches of `batch_size`; batch i of that stream is what iteration i trains
on, so `--resume` at iteration k just starts the stream at batch k. The augmentation seed of an item depends
on (seed, epoch, position), so the same image is augmented differently in each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields lists of (dataset index, augmentation seed), from iteration `start_iter` to `total_iters`."""

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        *,
        total_iters: int,
        start_iter: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if dataset_len < 1:
            raise ValueError("ResumableBatchSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.total_iters = total_iters
        self.start_iter = start_iter
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.per_rank = math.ceil(dataset_len / world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's indices for one epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        padded = self.per_rank * self.world_size
        order = (order * math.ceil(padded / len(order)))[:padded]
        return order[self.rank :: self.world_size]

    def epoch_of(self, iteration: int) -> float:
        """Epochs done (fractional) at the start of `iteration`."""
        return iteration * self.batch_size / self.per_rank

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.start_iter * self.batch_size
        epoch, offset = divmod(position, self.per_rank)
        order = self.epoch_order(epoch)
        for _ in range(self.start_iter, self.total_iters):
            batch = []
            while len(batch) < self.batch_size:
                if offset == self.per_rank:
                    epoch, offset = epoch + 1, 0
                    order = self.epoch_order(epoch)
                item_seed = (self.seed * 1_000_003 + epoch) * 1_000_003 + offset * self.world_size + self.rank
                batch.append((order[offset], item_seed % (2**63)))
                offset += 1
            yield batch

    def __len__(self) -> int:
        return max(0, self.total_iters - self.start_iter)
