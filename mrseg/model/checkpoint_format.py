"""The mrseg checkpoint layout, in one place: what `mrseg train` writes and `load_model` reads.

A checkpoint is a dict (saved with torch.save, loadable with `weights_only=True`):
format ("mrseg-checkpoint"), version, arch, classes (`{"id", "name"}` for labels 1..K), transform
({"min_size": int, "max_size": int}, the test-time resize), frozen_bn_eps, norm, anchor_sizes (5 ints),
channels, heads (the RoI heads beyond boxes: [] Faster R-CNN, ["mask"], ["keypoint"], ["mask", "keypoint"]),
num_keypoints (with a keypoint head), model (the state dict). `mrseg train` adds iteration, total_iters,
best_ap, config and, in last.pt, the training state (see mrseg.engine.train.checkpoint). Files from before
frozen_bn_eps / norm / anchor_sizes / channels / heads were recorded still load: the defaults below fill them
in (no heads key = a Mask R-CNN).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

FORMAT = "mrseg-checkpoint"
VERSION = 1
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)
SHAPE_KEYS = ("norm", "anchor_sizes", "channels")  # what a fine-tuning run inherits from its source file
HEADS = ("mask", "keypoint")  # the optional RoI heads, in the order a checkpoint lists them
DEFAULT_HEADS = ("mask",)  # what a checkpoint without a heads key has


class CheckpointFormatError(ValueError):
    """An mrseg checkpoint whose layout is broken; the message names the file and the field."""


def is_checkpoint(obj: object) -> bool:
    """True for a dict in the mrseg checkpoint layout (anything else is a state dict or foreign)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def frozen_bn_eps(model: nn.Module) -> float:
    """The eps of the model's FrozenBatchNorm2d layers (1e-5 when it has none)."""
    return next((float(m.eps) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)), 1e-5)


def make_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    classes: list[dict],
    min_size: int,
    max_size: int,
    norm: str | None = None,
    anchor_sizes: tuple[int, ...] = DEFAULT_ANCHOR_SIZES,
    channels: int = 256,
    **extra,
) -> dict:
    """The checkpoint dict of `model` (built by `build_model(arch, len(classes), norm=..., ...)`); `extra`
    (iteration, config, training state, ...) is added as is. The heads are read off the model."""
    keypoint_head = getattr(getattr(model, "roi_heads", None), "keypoint_head", None)
    if keypoint_head is not None:
        extra = {"num_keypoints": int(keypoint_head.num_keypoints), **extra}
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "classes": classes,
        "transform": {"min_size": int(min_size), "max_size": int(max_size)},
        "frozen_bn_eps": frozen_bn_eps(model),
        "norm": norm,
        "anchor_sizes": list(anchor_sizes),
        "channels": int(channels),
        "heads": list(getattr(model, "heads", DEFAULT_HEADS)),
        "model": model.state_dict(),
        **extra,
    }


@dataclass(frozen=True)
class CheckpointModel:
    """What a checkpoint says about its model: build it with `build_model(arch, len(classes), **build_kwargs)`
    and load `state_dict` into it."""

    arch: str
    classes: list[dict]
    build_kwargs: dict
    state_dict: dict
    heads: tuple[str, ...] = DEFAULT_HEADS


def read_checkpoint(obj: dict, source: str = "checkpoint") -> CheckpointModel:
    """Checks an mrseg checkpoint dict (see `is_checkpoint`) and returns its model description; a broken field
    raises CheckpointFormatError naming `source`."""
    arch = obj.get("arch")
    if not isinstance(arch, str):
        raise CheckpointFormatError(f"{source}: the checkpoint has no arch (found {arch!r}); re-save it")
    classes = obj.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "id" in c for c in classes):
        raise CheckpointFormatError(
            f"{source}: the checkpoint's classes must be a list of {{'id', 'name'}} dicts, "
            f"got {classes!r:.80}"
        )
    if not isinstance(obj.get("model"), dict):
        raise CheckpointFormatError(f"{source}: the checkpoint has no model state dict")
    transform = obj.get("transform") or {}
    anchor_sizes = tuple(obj.get("anchor_sizes") or DEFAULT_ANCHOR_SIZES)
    if len(anchor_sizes) != 5:
        raise CheckpointFormatError(f"{source}: anchor_sizes needs 5 sizes (P2..P6), got {anchor_sizes}")
    heads = obj.get("heads", list(DEFAULT_HEADS))
    if not isinstance(heads, list) or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
        raise CheckpointFormatError(
            f"{source}: the checkpoint's heads must be a list of distinct names from {list(HEADS)}, "
            f"got {heads!r:.80}"
        )
    kwargs = {
        "min_size": transform.get("min_size", 800),
        "max_size": transform.get("max_size", 1333),
        "frozen_bn_eps": obj.get("frozen_bn_eps", 1e-5),
        "norm": obj.get("norm"),
        "anchor_sizes": anchor_sizes,
        "channels": int(obj.get("channels", 256)),
    }
    if "num_keypoints" in obj:
        kwargs["num_keypoints"] = int(obj["num_keypoints"])
    heads = tuple(h for h in HEADS if h in heads)
    return CheckpointModel(
        arch=arch, classes=list(classes), build_kwargs=kwargs, state_dict=obj["model"], heads=heads
    )


def model_shape(path: str | os.PathLike) -> dict:
    """norm / anchor_sizes / channels recorded in the mrseg checkpoint at `path`, the keys it has; {} for
    anything else (a zoo name, a state dict, an unreadable file: the weights loader reports those)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return {}
    return {k: obj[k] for k in SHAPE_KEYS if k in obj} if is_checkpoint(obj) else {}
