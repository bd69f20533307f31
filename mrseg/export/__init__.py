"""Export a Mask R-CNN to ONNX (standard ops only: RoIAlign as ONNX RoiAlign) or TorchScript; run the files.

`export_model(weights, out=..., format="onnx")` writes and checks a file; `load_exported(path)` runs one with
the PyTorch model's eval contract. What the file takes and returns: `GraphSpec`.
"""

from mrseg.export.compare import Comparison, compare_detections
from mrseg.export.exporter import FORMATS, ExportError, ExportResult, export_model
from mrseg.export.runtime import ExportedModel, load_exported
from mrseg.export.spec import GraphSpec

__all__ = [
    "FORMATS",
    "Comparison",
    "ExportError",
    "ExportResult",
    "ExportedModel",
    "GraphSpec",
    "compare_detections",
    "export_model",
    "load_exported",
]
