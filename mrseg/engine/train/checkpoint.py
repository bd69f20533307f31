"""mrseg training checkpoints: written atomically, loadable with `weights_only=True`.

The layout (format constant, model fields) is defined in mrseg.model.checkpoint_format. Besides the model,
a training checkpoint carries everything `--resume` needs to continue exactly: optimizer, scheduler and AMP
scaler state, the iteration, and the RNG states (torch CPU/CUDA, numpy, python) as tensors.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from mrseg.model.checkpoint_format import is_checkpoint
from mrseg.outputs.atomic import atomic_open


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path` (never a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a killed save left one (model-sized): atomic_open's name, or older mrseg's `.<name>.tmp<pid>`
    for pattern in (f".{path.name}.*.tmp", f".{path.name}.tmp*"):
        for stale in path.parent.glob(pattern):
            stale.unlink(missing_ok=True)
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)


def rng_state() -> dict:
    """The global RNG states as tensors and numbers only (so weights_only loading accepts them)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint (weights_only=True), checked for the pieces `--resume` needs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} does not exist; pass the last.pt of the run to continue")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"--resume: {path} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not is_checkpoint(ckpt):
        raise CheckpointError(
            f"--resume: {path} is not an mrseg training checkpoint; use --weights to start from it"
        )
    missing = [k for k in ("model", "optimizer", "scheduler", "iteration", "rng", "config") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"--resume: {path} holds weights but no training state ({', '.join(missing)} missing); "
            "start a new run with --weights instead"
        )
    return ckpt
