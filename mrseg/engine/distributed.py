"""torch.distributed for the jobs torchrun starts (`mrseg predict`, `mrseg train`): this process's `Rank`,
`join` (the process group of the environment, or none), and the few collectives the jobs use. In a single
process every collective returns its input, so the jobs call them unconditionally.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class RankError(RuntimeError):
    """The ranks of a run can't go on together (the message says why and what to do)."""


@dataclass(frozen=True)
class Rank:
    """This process's place in the job: `rank` of `world`, `local_rank` picks its GPU. `owns_group`: `join`
    created the process group, so `close` destroys it."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn):
        """`fn()` run by rank 0, its result on every rank. An exception of rank 0 is raised on every rank
        (on the others as RankError with its message), so no rank waits for a broadcast that never comes."""
        result = error = None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        message = None
        if self.enabled:
            result, message = self.broadcast((result, None if error is None else f"{error}"))
        if error is not None:
            raise error
        if message is not None:
            raise RankError(f"rank 0 stopped the run: {message}")
        return result

    def all_reduce_mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """The mean over ranks of each value (for logging), reduced on `device` (nccl needs a GPU tensor)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        t /= self.world
        return dict(zip(keys, t.tolist(), strict=True))

    def any_rank(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is set on any rank (so every rank stops at the same iteration)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join(backend: str, timeout: datetime.timedelta | None = None) -> Rank:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...)
    over `backend` ("gloo", "nccl"), its collectives timing out after `timeout` (None: torch's default), or
    run alone (WORLD_SIZE unset or 1). A process group that already exists is used as it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    rank = int(os.environ["RANK"])
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    return Rank(rank=rank, world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")), owns_group=owns)
