"""Python side of ``torch.ops.mrseg.roi_align``: the public wrapper, autograd and fake (meta) implementations.

The op schemas and the CPU / CUDA kernels are registered by the compiled extension (``mrseg_kernels/csrc``);
importing this module adds what ``torch.autograd``, ``torch.compile`` and ``torch.export`` need.

Autocast: the op has no Autocast kernel, on purpose, so under ``torch.autocast`` the dispatcher falls through
and the kernels get the tensors as they are. The features keep the dtype the autocast convs gave them (fp16 /
bf16, or float32 after a layer autocast runs in float32) and the result has that dtype; the kernels accumulate
half types in float32, so this equals torchvision's rule (compute in float32, return the input's dtype) up to
the final rounding, and the next conv / linear would cast to the autocast dtype anyway. The RoIs are never
cast: the kernels compute coordinates in float32 for half features, and fp16 / bf16 RoIs would sit on a 1 px /
8 px grid above 1024 px. ``torch.library.register_autocast`` is therefore the wrong tool: it casts every
floating input, RoIs included. tests/mrseg_kernels/test_autocast.py pins this behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import mrseg_kernels._C  # noqa: F401  (registers the ops)

__all__ = ["roi_align", "boxes_to_rois"]


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """A list of per-image ``[K_i, 4]`` xyxy boxes -> ``[sum K_i, 5]`` rois ``(i, x1, y1, x2, y2)``."""
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.size(1) != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(
                f"roi_align: boxes[{i}] must be a [K, 4] tensor of (x1, y1, x2, y2), got {shape}"
            )
    if len(boxes) == 0:
        raise ValueError("roi_align: boxes is an empty list; pass one [K_i, 4] tensor per image")
    ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(ids, dim=0), torch.cat(list(boxes), dim=0)], dim=1)


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    size = tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) for s in size):
        raise ValueError(
            f"roi_align: output_size must be an int or a pair of ints (h, w), got {output_size!r}"
        )
    return size  # type: ignore[return-value]


def roi_align(
    input: Tensor,
    rois: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign (He et al. 2017) with the semantics of ``torchvision.ops.roi_align``.

    Args:
        input: ``[N, C, H, W]`` feature map; float32/float64/float16/bfloat16, contiguous or channels_last.
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list of ``N``
            per-image ``[K_i, 4]`` boxes.
        output_size: ``(PH, PW)`` or ``P`` for ``P x P`` bins.
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: sample points per bin along each axis; ``<= 0``: ``ceil(roi_size / output_size)``.
        aligned: shift boxes by -0.5 pixel so that pixel centres line up (Detectron2's ROIAlignV2).

    Returns:
        ``[K, C, PH, PW]``, channels_last when ``input`` is.

    Bad RoIs:
        A RoI with a NaN or infinite coordinate (or one whose scaled size overflows to inf) samples no point:
        its ``[C, PH, PW]`` output is zeros and it adds nothing to the input's gradient. (torchvision's op
        reads out of bounds on such RoIs.) A batch index outside ``[0, N)``, NaN and inf included, raises a
        RuntimeError naming the row, in the forward and the backward, on CPU and CUDA; on CUDA that check
        reads one bool back from the device (a synchronisation) before the kernel is launched.
    """
    if not isinstance(input, Tensor) or input.dim() != 4:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"roi_align: input must be a [N, C, H, W] tensor, got {shape}")
    if not isinstance(rois, Tensor):
        rois = boxes_to_rois(rois)
    elif not torch.jit.is_tracing() and (rois.dim() != 2 or rois.size(1) != 5):  # the op checks it too
        raise ValueError(
            f"roi_align: rois must be a [K, 5] tensor of (batch_index, x1, y1, x2, y2) or a list of [K_i, 4] "
            f"boxes, got shape {tuple(rois.shape)}"
        )
    ph, pw = _pair(output_size)
    return torch.ops.mrseg.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
    )


def _channels_last(x: Tensor) -> bool:
    # Same rule as use_channels_last() in csrc/ops.cpp: NHWC memory, and not also plain contiguous.
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.register_fake("mrseg::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"mrseg::roi_align: input must be [N, C, H, W], got {input.shape}")
    torch._check(
        rois.dim() == 2 and rois.size(1) == 5,
        lambda: f"mrseg::roi_align: rois must be [K, 5], got {rois.shape}",
    )
    return torch.empty(
        (rois.size(0), input.size(1), pooled_height, pooled_width),
        dtype=input.dtype,
        device=input.device,
        memory_format=_memory_format(_channels_last(input)),
    )


@torch.library.register_fake("mrseg::_roi_align_backward")
def _roi_align_backward_fake(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    batch_size,
    channels,
    height,
    width,
    sampling_ratio,
    aligned,
    channels_last,
):
    return torch.empty(
        (batch_size, channels, height, width),
        dtype=grad.dtype,
        device=grad.device,
        memory_format=_memory_format(channels_last),
    )


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _channels_last(input)
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.params
        n, c, h, w = ctx.input_shape
        grad_input = torch.ops.mrseg._roi_align_backward(
            grad,
            rois,
            spatial_scale,
            pooled_height,
            pooled_width,
            n,
            c,
            h,
            w,
            sampling_ratio,
            aligned,
            ctx.channels_last,
        )
    # No gradient flows to the boxes (as in torchvision).
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("mrseg::roi_align", _backward, setup_context=_setup_context)
