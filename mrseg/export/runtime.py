"""Run an exported file (ONNX through onnxruntime, or TorchScript) with the PyTorch model's eval contract.

`load_exported(path, device) -> (ExportedModel, ModelInfo)`: `model(images)` takes a list of float [3, H, W]
RGB tensors in 0..1 (any size) and returns what `MaskRCNN` returns in eval mode (docs/internals.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mrseg.export.spec import INPUT_NAMES, METADATA_KEY, GraphSpec
from mrseg.export.steps import postprocess, preprocess
from mrseg.model.zoo import ModelInfo, WeightsError

GraphOutputs = tuple[Tensor, ...]  # in the order of GraphSpec.output_names


@dataclass(eq=False)
class ExportedModel:
    """An exported graph plus its pre- and post-step. `run(canvas, sizes)` executes the graph itself."""

    run: Callable[[Tensor, Tensor], GraphOutputs]
    spec: GraphSpec
    source: str = ""
    runs_on: str = "torch (CPU)"  # what executes the graph, for the start-of-run note

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(arch=self.spec.arch, classes=list(self.spec.classes), source=self.source)

    def eval(self) -> ExportedModel:
        return self

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        results: list[dict[str, Tensor]] = []
        for start in range(0, len(images), self.spec.batch):
            # onnxruntime / the traced graph read host memory
            chunk = [im.cpu() for im in images[start : start + self.spec.batch]]
            canvas, sizes = preprocess(chunk, self.spec)
            outputs = dict(zip(self.spec.output_names, self.run(canvas, sizes), strict=True))
            originals = [(int(im.shape[-2]), int(im.shape[-1])) for im in chunk]
            results.extend(postprocess(outputs, sizes, originals, self.spec.mask_threshold))
        return results


def _check_file(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{what} file {path!r} does not exist: check the path.")
    return path


def load_onnx(path: str | os.PathLike, device: str | torch.device = "cpu") -> ExportedModel:
    """An ONNX file written by `mrseg export`, run by onnxruntime (CUDA provider when `device` is a GPU and
    onnxruntime has it, else CPU)."""
    import onnx
    import onnxruntime as ort

    path = _check_file(path, "ONNX")
    try:
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise WeightsError(f"{path!r} is not a readable ONNX model ({e}); re-export it.") from None
    if METADATA_KEY not in meta:
        raise WeightsError(
            f"{path!r} was not written by `mrseg export` (no '{METADATA_KEY}' metadata on how to feed it); "
            "export the model with `mrseg export --format onnx`."
        )
    spec = GraphSpec.from_json(meta[METADATA_KEY])
    providers, warning = onnx_providers(device, ort.get_available_providers())
    session = ort.InferenceSession(path, providers=providers)
    first = (session.get_providers() or ["CPUExecutionProvider"])[0]  # the provider that runs first
    runs_on = f"onnxruntime {first}"
    if first == "CUDAExecutionProvider":
        runs_on += f" on {torch.device(device)}"
    if warning is None and torch.device(device).type == "cuda" and not runs_on.startswith("onnxruntime CUDA"):
        warning = f"onnxruntime could not start its CUDA provider for {device}"
    if warning is not None:
        runs_on += f" [warning: {warning}; the model runs on the CPU]"

    def run(canvas: Tensor, sizes: Tensor) -> GraphOutputs:
        feeds = dict(zip(INPUT_NAMES, (canvas.cpu().numpy(), sizes.cpu().numpy()), strict=True))
        return tuple(torch.from_numpy(o) for o in session.run(None, feeds))  # type: ignore[return-value]

    return ExportedModel(run, spec, source=path, runs_on=runs_on)


def onnx_providers(device: str | torch.device, available: list[str]) -> tuple[list, str | None]:
    """(onnxruntime providers for `device`, a warning or None).

    A CUDA device asks for `("CUDAExecutionProvider", {"device_id": N})` (N: the device's index, else the
    current CUDA device), then the CPU provider as onnxruntime's fallback; when this onnxruntime has no CUDA
    provider (the CPU-only `onnxruntime` package) the CPU provider alone, with a warning saying so."""
    device = torch.device(device)
    if device.type != "cuda":
        return ["CPUExecutionProvider"], None
    if "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"], (
            f"--device {device} asked, but this onnxruntime has no CUDAExecutionProvider (providers: "
            f"{', '.join(available)}); install onnxruntime-gpu instead of onnxruntime to run .onnx models on "
            "the GPU"
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], None


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> ExportedModel:
    """A TorchScript file written by `mrseg export --format torchscript` (needs `import mrseg_kernels`).

    The graph is traced on the CPU, with CPU tensors created inside it: it runs on the CPU whatever `device`.
    """
    import mrseg_kernels  # noqa: F401  (registers torch.ops.mrseg.roi_align, which the graph calls)

    path = _check_file(path, "TorchScript")
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still loads fine
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise WeightsError(f"{path!r} is not a loadable TorchScript file ({e}); re-export it.") from None
    if not extra[f"{METADATA_KEY}.json"]:
        raise WeightsError(f"{path!r} was not written by `mrseg export` (no {METADATA_KEY}.json inside).")
    spec = GraphSpec.from_json(extra[f"{METADATA_KEY}.json"])

    def run(canvas: Tensor, sizes: Tensor) -> GraphOutputs:
        # The profiling executor re-optimizes the NMS loop for every new shape, which is far slower than
        # running it plainly.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return module(canvas, sizes)

    return ExportedModel(run, spec, source=path)


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[ExportedModel, ModelInfo]:
    """(model, ModelInfo) for an `.onnx` or a TorchScript file (any other suffix) from `mrseg export`."""
    model = load_onnx(path, device) if str(path).lower().endswith(".onnx") else load_torchscript(path, device)
    return model, model.info
