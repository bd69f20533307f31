"""Quick check of the compiled ops: ``python -m mrseg_kernels.selfcheck``.

Prints how the extension was built, compares ``mrseg_kernels.roi_align`` (forward and backward) with
``torchvision.ops.roi_align`` on a small random case on the CPU (and on CUDA when a device is visible), then
prints OK; exits non-zero on a mismatch.
"""

from __future__ import annotations

import sys

import torch
import torchvision

import mrseg_kernels


def compare(device: str, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> float:
    """Largest absolute difference to torchvision over outputs and input gradients, on one random case."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 24, 32, generator=g, dtype=dtype)
    boxes = torch.rand(64, 4, generator=g, dtype=dtype) * 120 - 8
    boxes[:, 2:] = boxes[:, :2] + torch.rand(64, 2, generator=g, dtype=dtype) * 60
    rois = torch.cat([torch.randint(0, 2, (64, 1), generator=g).to(dtype), boxes], dim=1).to(device)
    x = x.to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    worst = 0.0
    for aligned in (False, True):
        for sampling_ratio in (-1, 2):
            ours_in = x.detach().clone().requires_grad_()
            ref_in = x.detach().contiguous().requires_grad_()
            args = ((7, 7), 0.25, sampling_ratio, aligned)
            ours = mrseg_kernels.roi_align(ours_in, rois, *args)
            ref = torchvision.ops.roi_align(ref_in, rois, *args)
            ours.backward(torch.ones_like(ours))
            ref.backward(torch.ones_like(ref))
            worst = max(
                worst, (ours - ref).abs().max().item(), (ours_in.grad - ref_in.grad).abs().max().item()
            )
    return worst


def main() -> int:
    from mrseg_kernels import _C

    print(f"mrseg_kernels: {_C.__file__}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"CUDA kernels compiled: {_C.with_cuda()}; OpenMP: {_C.with_openmp()}")
    print(f"CPU threads: {torch.get_num_threads()}")
    devices = ["cpu"]
    if torch.cuda.is_available():
        if _C.with_cuda():
            devices.append("cuda")
        else:
            print("a CUDA device is visible but the extension was built without CUDA: rebuild it with")
            print("CUDA_HOME set (make install, or pip install --no-build-isolation -e .)")
            return 1
    else:
        print("no CUDA device visible: checking the CPU kernels only")
    ok = True
    for device in devices:
        for channels_last in (False, True):
            diff = compare(device, channels_last=channels_last)
            good = diff <= 1e-4
            ok &= good
            layout = "channels_last" if channels_last else "contiguous"
            verdict = "ok" if good else "MISMATCH"
            print(f"{device:>4} {layout:<13} max |ours - torchvision| = {diff:.2e}  {verdict}")
    print("OK" if ok else "FAILED: mrseg_kernels.roi_align differs from torchvision.ops.roi_align")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
