"""`export_model`: a Mask R-CNN (Keypoint R-CNN, Faster R-CNN) to ONNX (standard ops only) or TorchScript,
checked against PyTorch."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mrseg.export.compare import Comparison, compare_detections
from mrseg.export.graph import InferenceGraph
from mrseg.export.nms import scripted_nms
from mrseg.export.runtime import ExportedModel, load_onnx, load_torchscript
from mrseg.export.spec import FORMATS, INPUT_NAMES, METADATA_KEY, GraphSpec, round_up
from mrseg.export.steps import preprocess
from mrseg.model.maskrcnn import MaskRCNN
from mrseg.model.zoo import ModelInfo, load_model

ONNX_OPSET = 17


class ExportError(ValueError):
    """The export cannot be done as asked; the message says what and what to do."""


@dataclass
class ExportResult:
    path: Path
    format: str
    spec: GraphSpec
    seconds: float
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


def graph_spec(model: MaskRCNN, info: ModelInfo, imgsz: tuple[int, int] | None, batch: int) -> GraphSpec:
    """The size to trace at (default: the model's min_size x max_size, rounded up to the padding multiple;
    the file takes any size) and the model's resize, padding and normalization constants."""
    transform = model.transform
    stride = transform.size_divisible
    min_size, max_size = int(transform.min_size[-1]), int(transform.max_size)
    height, width = imgsz if imgsz is not None else (min_size, max_size)
    if height < 1 or width < 1 or batch < 1:
        raise ExportError(f"--imgsz {height} {width} and --batch {batch} must be positive")
    return GraphSpec(
        height=round_up(height, stride),
        width=round_up(width, stride),
        batch=batch,
        min_size=min_size,
        max_size=max_size,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        mask_threshold=float(model.mask_threshold),
        arch=info.arch,
        classes=list(info.classes),
        size_divisible=stride,
        heads=list(model.heads),
    )


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 [H, W, 3] test picture: a gradient with a few filled shapes."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // max(width, 1), yy * 255 // max(height, 1), (xx + yy) % 256], -1).astype(
        np.uint8
    )
    for _ in range(8):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, max(9, width // 3))), int(rng.integers(8, max(9, height // 3)))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + w, y + h), color, -1)
        else:
            cv2.ellipse(image, (x, y), (w // 2, h // 2), 0, 0, 360, color, -1)
    return image


def _write_onnx(graph: InferenceGraph, example: tuple[Tensor, Tensor], spec: GraphSpec, path: str) -> None:
    import onnx

    from mrseg_kernels.onnx import register_onnx_symbolic

    register_onnx_symbolic()
    torch.onnx.export(
        graph,
        example,
        path,
        dynamo=False,
        opset_version=ONNX_OPSET,
        input_names=list(INPUT_NAMES),
        output_names=list(spec.output_names),
        dynamic_axes={
            "images": {2: "height", 3: "width"},
            **{name: {0: "detections"} for name in spec.output_names},
        },
    )
    proto = onnx.load(path)
    proto.metadata_props.add(key=METADATA_KEY, value=spec.to_json())
    onnx.save(proto, path)


def _write_torchscript(
    graph: InferenceGraph, example: tuple[Tensor, Tensor], spec: GraphSpec, path: str
) -> None:
    with scripted_nms():
        traced = torch.jit.trace(graph, example, check_trace=False)
    torch.jit.save(traced, path, _extra_files={f"{METADATA_KEY}.json": spec.to_json()})


def export_model(
    weights: str | Path | None = None,
    *,
    out: str | Path,
    format: str = "onnx",
    imgsz: tuple[int, int] | None = None,
    batch: int = 1,
    arch: str | None = None,
    model: MaskRCNN | None = None,
    info: ModelInfo | None = None,
    samples: list[np.ndarray] | None = None,
    check: bool = True,
    check_score: float = 0.5,
    log: Callable[[str], None] = lambda _msg: None,
) -> ExportResult:
    """Export the inference model to `out` and (with `check`) compare it with PyTorch on sample images.

    The file holds the network for any padded image size (traced at `imgsz` (H, W)) with a fixed batch;
    resizing and padding the images and pasting the masks are small steps outside it (`mrseg.export.steps`,
    described in `mrseg.export.spec.GraphSpec`, which is also stored in the file). `load_exported` runs it
    with the model's eval contract. samples: RGB uint8 [H, W, 3] images for tracing and the check (default:
    a synthetic one per batch slot). Returns what was written and the comparisons (`result.ok`).
    """
    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if model is None:
        if weights is None:
            raise ExportError("export_model needs weights= (a zoo name or a file) or model=")
        model, info = load_model(weights, arch=arch, device="cpu")
    info = info or ModelInfo(
        arch="", classes=[{"id": i, "name": f"class{i}"} for i in range(1, model.num_classes + 1)]
    )
    model = model.eval().cpu()
    spec = graph_spec(model, info, imgsz, batch)
    notes = []
    if imgsz is not None and (spec.height, spec.width) != tuple(imgsz):
        notes.append(
            f"--imgsz rounded up to {spec.height} x {spec.width} (a multiple of the model's padding)"
        )
    samples = samples or [synthetic_image(spec.height, spec.width, seed=i) for i in range(batch)]
    images = [torch.from_numpy(np.ascontiguousarray(s)).permute(2, 0, 1).float().div(255.0) for s in samples]
    graph = InferenceGraph(model=model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(out.parent / f".{out.name}.tmp{os.getpid()}")
    start = time.perf_counter()
    log(f"exporting {format}: traced at {spec.height} x {spec.width} (any size runs), batch {spec.batch}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = preprocess(images[: spec.batch], spec)
            (_write_onnx if format == "onnx" else _write_torchscript)(graph, example, spec, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    result = ExportResult(out, format, spec, time.perf_counter() - start, notes=notes)
    if check:
        result.comparisons = check_export(out, format, graph, spec, images, check_score)
    return result


def check_export(
    path: Path, format: str, graph: InferenceGraph, spec: GraphSpec, images: list[Tensor], score: float
) -> list[Comparison]:
    """Run the written file and the PyTorch graph (same weights, same pre- and post-step) on `images`."""

    def eager(canvas: Tensor, sizes: Tensor):
        with torch.no_grad():
            return graph(canvas, sizes)

    reference = ExportedModel(eager, spec)
    exported = load_onnx(path) if format == "onnx" else load_torchscript(path)
    return [
        compare_detections(r, e, score=score)
        for r, e in zip(reference(images), exported(images), strict=True)
    ]
