"""Compiled ops for mrseg: RoIAlign (CPU and CUDA, forward and backward).

``roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False)`` has the semantics
of ``torchvision.ops.roi_align``; the op itself is ``torch.ops.mrseg.roi_align``.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from mrseg_kernels import _C
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "mrseg_kernels._C, the compiled RoIAlign extension, could not be loaded "
        f"({e}). Build it from the repository root with `make install` or "
        "`pip install --no-build-isolation -e .` (set CUDA_HOME to also build the CUDA kernels), "
        "and rebuild after upgrading torch."
    ) from e

from mrseg_kernels.ops import roi_align

__all__ = ["roi_align", "with_cuda"]


def with_cuda() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _C.with_cuda()
