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


class ShardError(RuntimeError):
    """The ranks of a run can't go on together (the message says why and what to do)."""


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

    def on_main(self, fn):
        """`fn()` run by rank 0, its result on every rank. An exception of rank 0 is raised on every rank
        (on the others as ShardError with its message), so no rank waits for a broadcast that never comes."""
        result = error = None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        message = None
        if self.world > 1:
            result, message = self.broadcast((result, None if error is None else f"{error}"))
        if error is not None:
            raise error
        if message is not None:
            raise ShardError(f"rank 0 stopped the run: {message}")
        return result

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


def missing_parts(unaccounted: int, parts: list[dict], seen_ranks: set[int], out_dir) -> str | None:
    """None when rank 0's journals account for every input (done or failed), else the error to stop on.

    `unaccounted`: inputs neither journaled as done nor as failed in what rank 0 sees of OUT/.mrseg;
    `parts`: each rank's `{"processed", "failed"}` counts of this run (gathered); `seen_ranks`: the ranks
    whose journal files rank 0 sees. Ranks on another node write their journals on that node's disk unless
    `--out` is shared: their inputs would silently be missing from the final files."""
    if unaccounted == 0:
        return None
    reported = sum(int(p.get("processed", 0)) + int(p.get("failed", 0)) for p in parts)
    unseen = [
        r
        for r, p in enumerate(parts)
        if r not in seen_ranks and p.get("processed", 0) + p.get("failed", 0) > 0
    ]
    return (
        f"{unaccounted} input(s) are neither in the journals nor in the failure logs that rank 0 sees in "
        f"{out_dir}/.mrseg (the ranks reported {reported} input(s) written or failed this run"
        + (f"; no journal of rank(s) {', '.join(map(str, unseen))} is visible here" if unseen else "")
        + "). The ranks wrote to different disks: a multi-node run needs --out on a filesystem shared by "
        "every node (NFS, Lustre, ...). No final file was written. To finish, copy every node's "
        "OUT/.mrseg/records-*.jsonl and failures-*.jsonl into this OUT/.mrseg/ and run again with --resume."
    )
