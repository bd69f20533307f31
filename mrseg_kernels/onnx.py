"""ONNX export of ``torch.ops.mrseg.roi_align`` as the standard ONNX ``RoiAlign`` (opset >= 16).

Any ONNX runtime then runs exported models without this extension. The mapping:

- rois ``[K, 5]`` (batch_index, x1, y1, x2, y2) -> ONNX ``rois [K, 4]`` and ``batch_indices int64 [K]``;
- ``aligned=True`` -> ``coordinate_transformation_mode="half_pixel"`` (the -0.5 pixel shift),
  ``aligned=False`` -> ``"output_half_pixel"`` (the original RoIAlign, no shift);
- ``sampling_ratio <= 0`` (adaptive, ``ceil(roi_size / output_size)`` points per bin) -> ``0``, which means
  the same in ONNX; a positive ratio passes through.

``register_onnx_symbolic()`` registers this for the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``); ``mrseg.export`` calls it.
"""

from __future__ import annotations

import torch

ONNX_OPSET = 16  # RoiAlign's coordinate_transformation_mode (needed for aligned=True) arrived in opset 16.

_registered = False


def roi_align_symbolic(g, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """TorchScript-exporter symbolic: ``mrseg::roi_align`` -> ONNX ``RoiAlign`` (see the module docstring)."""
    from torch.onnx.symbolic_helper import _maybe_get_const

    spatial_scale = float(_maybe_get_const(spatial_scale, "f"))
    pooled_height = int(_maybe_get_const(pooled_height, "i"))
    pooled_width = int(_maybe_get_const(pooled_width, "i"))
    sampling_ratio = int(_maybe_get_const(sampling_ratio, "i"))
    aligned = bool(_maybe_get_const(aligned, "b"))
    # Gather with a scalar index drops the column axis: [K, 5] -> [K].
    batch_index = g.op("Gather", rois, g.op("Constant", value_t=torch.tensor(0, dtype=torch.int64)), axis_i=1)
    batch_index = g.op("Cast", batch_index, to_i=torch.onnx.TensorProtoDataType.INT64)
    boxes = g.op("Gather", rois, g.op("Constant", value_t=torch.tensor([1, 2, 3, 4])), axis_i=1)
    return g.op(
        "RoiAlign",
        input,
        boxes,
        batch_index,
        coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
        mode_s="avg",
        output_height_i=pooled_height,
        output_width_i=pooled_width,
        sampling_ratio_i=max(sampling_ratio, 0),
        spatial_scale_f=spatial_scale,
    )


def register_onnx_symbolic() -> None:
    """Register ``roi_align_symbolic`` with ``torch.onnx`` for opset 16 and later (idempotent)."""
    global _registered
    if not _registered:
        torch.onnx.register_custom_op_symbolic("mrseg::roi_align", roi_align_symbolic, ONNX_OPSET)
        _registered = True
