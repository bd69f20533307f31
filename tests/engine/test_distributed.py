"""mrseg.engine.distributed: the torchrun process group of predict and train.

- Alone (WORLD_SIZE unset or 1) `join` creates no process group, whatever the backend, and every collective
  returns its input; `on_main` runs its function and raises its exception as it is.
- Two real gloo processes, started with the environment torchrun sets: broadcast, gather, the mean over ranks
  (against numpy's mean of what each rank had), any_rank, an exception of rank 0 in `on_main` stopping both
  ranks, and `close` destroying only the group that `join` created.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from mrseg.engine.distributed import Rank, join

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import datetime, json
import torch, torch.distributed as dist
from mrseg.engine.distributed import join

cpu = torch.device("cpu")
rank = join("gloo", datetime.timedelta(seconds=60))
out = {"rank": rank.rank, "world": rank.world, "local_rank": rank.local_rank, "is_main": rank.is_main,
       "enabled": rank.enabled, "owns": rank.owns_group}
out["values"] = {"loss": 1.0 + 3.0 * rank.rank, "lr": 0.5 * (rank.rank + 1) ** 2}
out["mean"] = rank.all_reduce_mean(out["values"], cpu)
out["gathered"] = rank.gather(10 * rank.rank)
out["broadcast"] = rank.broadcast(f"from rank {rank.rank}")
out["any"] = [rank.any_rank(rank.rank == 1, cpu), rank.any_rank(False, cpu)]

def refuse():
    raise ValueError("--out x is in use")

def only_main():
    assert rank.is_main, "only rank 0 runs it"
    return ["listed", 3]

try:
    rank.on_main(refuse)
except Exception as e:
    out["error"] = [type(e).__name__, str(e)]
out["on_main"] = rank.on_main(only_main)
again = join("gloo")  # the group exists: used, not owned
out["again_owns"] = again.owns_group
again.close()
out["alive_after_close_of_unowned"] = dist.is_initialized()
rank.barrier()
rank.close()
out["alive_after_close"] = dist.is_initialized()
print(json.dumps(out))
"""


def test_alone_join_creates_no_group_and_collectives_return_their_input(monkeypatch):
    for world in (None, "1"):
        if world is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world)
        rank = join("nccl")  # no GPU needed: nothing is initialised
        assert rank == Rank() and rank.is_main and not rank.enabled and rank.local_rank == 0
        assert not dist.is_initialized()
    cpu = torch.device("cpu")
    obj = {"items": [1, 2]}
    values = {"loss": 2.5, "loss_mask": 0.25}
    assert rank.broadcast(obj) is obj
    assert rank.gather(obj) == [obj] and rank.gather(obj)[0] is obj
    assert rank.all_reduce_mean(values, cpu) is values
    assert rank.any_rank(True, cpu) is True and rank.any_rank(False, cpu) is False
    assert rank.on_main(lambda: obj) is obj
    with pytest.raises(KeyError, match="the original"):
        rank.on_main(lambda: {}["the original"])
    rank.barrier()
    rank.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_share_values_and_rank_0s_error(tmp_path):
    port = _free_port()
    procs = []
    for r in range(2):
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
        }  # fmt: skip
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], cwd=tmp_path, env=env, **pipes))
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr.decode()[-3000:]
        outs.append(json.loads(stdout.decode().splitlines()[-1]))

    assert [o["rank"] for o in outs] == [0, 1] and [o["local_rank"] for o in outs] == [0, 1]
    assert all(o["world"] == 2 and o["enabled"] and o["owns"] for o in outs)
    assert [o["is_main"] for o in outs] == [True, False]
    for key in outs[0]["values"]:
        expected = np.mean([o["values"][key] for o in outs])
        assert [o["mean"][key] for o in outs] == pytest.approx([expected, expected], rel=1e-12)
    assert all(o["gathered"] == [10 * p["rank"] for p in outs] for o in outs)
    assert all(o["broadcast"] == f"from rank {outs[0]['rank']}" for o in outs)
    assert all(o["any"] == [True, False] for o in outs)  # rank 1's flag reaches rank 0
    assert outs[0]["error"] == ["ValueError", "--out x is in use"]
    assert outs[1]["error"] == ["RankError", "rank 0 stopped the run: --out x is in use"]
    assert outs[0]["on_main"] == outs[1]["on_main"] == ["listed", 3]
    assert all(not o["again_owns"] and o["alive_after_close_of_unowned"] for o in outs)
    assert not any(o["alive_after_close"] for o in outs)
