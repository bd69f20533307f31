"""Sharding predict across processes started by torchrun (one per GPU, or several on CPU with gloo).

Only the coordination uses torch.distributed (a barrier at the end and a few small objects), over gloo so
that it works on CPU and GPU alike; the model runs independently on each rank.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch.distributed as dist

# Ranks finish their shards at different times; the end barrier must wait for the slowest.
_BARRIER_TIMEOUT = datetime.timedelta(days=2)


@dataclass
class Shard:
    """This process's place in the job: `rank` of `world`, `local_rank` picks its GPU."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_shard() -> Shard:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, ...), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=_BARRIER_TIMEOUT)
        owns = True
    return Shard(rank=rank, world=world, local_rank=local_rank, owns_group=owns)


def units_for_rank(units: list, shard: Shard) -> list:
    """Unit u (an image, or a whole video so its track ids stay consistent) goes to rank u % world."""
    return units[shard.rank :: shard.world]
