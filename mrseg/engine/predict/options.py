"""What a predict run is set up with, checked before any model runs: the weights (zoo name, checkpoint,
state dict or .onnx), the precision, the classes to keep; `PredictError` names what is wrong and what to do.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mrseg.model.coco_classes import is_placeholder

if TYPE_CHECKING:
    from mrseg.engine.predict.predictor import Predictor


class PredictError(ValueError):
    """A run can't start or go on as asked; the message says what and what to do."""


def device_note(predictor: Predictor) -> str:
    """`device: cuda:1 (NVIDIA H100, torch)` / `device: cpu (onnxruntime CPUExecutionProvider)`: what runs."""
    dev = predictor.device
    where = str(dev)
    if dev.type == "cuda":
        where += f" ({torch.cuda.get_device_name(dev)})"
    runs_on = getattr(predictor.model, "runs_on", None) or "torch"
    return f"device: {where}, model run by {runs_on}"


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The `torch.autocast` dtype for `--precision` on `device`: None for fp32 (no autocast); PredictError for
    a name or a device that can't run it."""
    if precision not in PRECISIONS:
        raise PredictError(f"--precision {precision}: choose {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cpu" and dtype == torch.float16:
        raise PredictError(
            "--precision fp16 runs on CUDA devices only (CPU kernels for float16 are slow or missing); "
            "on the CPU use --precision bf16, or fp32 (the default)"
        )
    if not torch.amp.is_autocast_available(device.type):
        raise PredictError(f"--precision {precision}: torch.autocast doesn't run on {device}; use fp32")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise PredictError(f"--precision bf16: {device} has no bfloat16 support; use --precision fp16")
    return dtype


def load_weights(weights: str | Path, arch: str | None, device: torch.device, **model_kwargs):
    """(model, ModelInfo) for a zoo name, an mrseg checkpoint, a state-dict file or an exported .onnx.
    `model_kwargs` (see `zoo.build_model`) configure a torch model; an .onnx graph has them built in."""
    if str(weights).lower().endswith(".onnx"):
        if importlib.util.find_spec("onnxruntime") is None:
            raise PredictError(
                f"--weights {weights}: running .onnx models needs onnxruntime (pip install onnxruntime); or "
                "pass the .pt checkpoint the model was exported from"
            )
        from mrseg.export.runtime import load_onnx

        model = load_onnx(weights, device)
        return model, model.info
    from mrseg.model import zoo

    return zoo.load_model(weights, arch=arch, device=device, **model_kwargs)


def resolve_class_filter(wanted: Iterable[str | int] | None, classes: Sequence[dict]) -> set[int] | None:
    """Model labels (1..K) to emit: those of `--classes` (names, case-insensitive, or category ids), else
    every label whose class is a real category; None when that is every label (nothing to drop).

    Placeholder slots ("N/A", e.g. COCO ids 12, 26, 29, ...) are never emitted: their detections are dropped
    here, before any writer, so no output names a category its category list lacks. Asking for one, or for a
    name / id the model lacks, raises PredictError listing the valid names.
    """
    real = {i + 1 for i, c in enumerate(classes) if not is_placeholder(c)}
    wanted = [w for w in (wanted or []) if str(w).strip()]
    if not wanted:
        return None if len(real) == len(classes) else real
    by_name = {str(c["name"]).lower(): i + 1 for i, c in enumerate(classes) if i + 1 in real}
    by_id = {int(c["id"]): i + 1 for i, c in enumerate(classes) if i + 1 in real}
    labels = set()
    for w in wanted:
        key = str(w).strip()
        if key.lower() in by_name:
            labels.add(by_name[key.lower()])
        elif key.isdigit() and int(key) in by_id:
            labels.add(by_id[int(key)])
        else:
            raise PredictError(_class_filter_error(key, classes, real))
    return labels


def _class_filter_error(key: str, classes: Sequence[dict], real: set[int]) -> str:
    slots = {str(c["name"]).lower() for c in classes} | {str(c["id"]) for c in classes}
    what = "an unused slot with no category" if key.lower() in slots else "not a class of this model"
    names = ", ".join(f"{c['name']} ({c['id']})" for i, c in enumerate(classes) if i + 1 in real)
    return f"--classes: {key!r} is {what}; give names or category ids (comma-separated) from: {names}"
