"""Runs a `.onnx` file from `mrseg export` through onnxruntime, for `mrseg predict --weights model.onnx`.

`load_model(path, device) -> (model, ModelInfo)`; `model(images)` has `MaskRCNN`'s eval contract (a list of
float [3, H, W] RGB tensors in 0..1 in, per image boxes / scores / labels / masks bool [D, 1, H, W] out).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrseg.export.runtime import ExportedModel, load_onnx
from mrseg.model.zoo import ModelInfo

__all__ = ["ExportedModel", "load_model"]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ExportedModel, ModelInfo]:
    model = load_onnx(path, device)
    return model, model.info
