"""Which device runs a model, for every command (predict, train, eval): one resolver, one set of errors."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A `--device` that can't run here; the message says why and what to use instead."""


def _kernels_with_cuda() -> bool:
    """Whether mrseg_kernels (RoIAlign) was built with its CUDA kernels."""
    try:
        import mrseg_kernels

        return bool(mrseg_kernels.with_cuda())
    except (ImportError, AttributeError, RuntimeError):
        return False


def resolve_device(
    device: str | torch.device = "auto",
    local_rank: int = 0,
    *,
    needs_kernels: bool = True,
    notes: list[str] | None = None,
) -> torch.device:
    """The device to run on, made this process's current CUDA device (`torch.cuda.set_device`) when a GPU.

    `auto` -> `cuda:LOCAL_RANK` when CUDA is available and, for a model that runs mrseg's RoIAlign
    (`needs_kernels`; an .onnx model doesn't), mrseg_kernels was built with CUDA; else cpu, with a line in
    `notes` saying why when a GPU was there. `cuda` -> `cuda:LOCAL_RANK` (this torchrun rank's GPU). An
    explicit CUDA device that can't run (no CUDA, no such GPU, kernels built without CUDA) raises
    DeviceError at start rather than failing at the first batch. Setting the current device keeps pinned
    memory and CUDA calls without an index off GPU 0 (which every rank would otherwise also use)."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and needs_kernels and not _kernels_with_cuda():
            name = "cpu"
            if notes is not None:
                notes.append(
                    "note: --device auto: a GPU is there but mrseg_kernels was built without CUDA, so the "
                    "model runs on the CPU; rebuild it with CUDA (pip install . with nvcc and CUDA_HOME set) "
                    "to use the GPU"
                )
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {device}: not a device name (use auto, cpu or cuda:N)") from e
    if dev.type == "cuda":
        if needs_kernels and not _kernels_with_cuda():
            raise DeviceError(
                f"--device {device}: mrseg_kernels (RoIAlign) was built without CUDA; rebuild it with CUDA "
                "(pip install . with nvcc and CUDA_HOME set), or use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"--device {device}: no such GPU (this machine has {count}: cuda:0..cuda:{count - 1})"
            )
        torch.cuda.set_device(dev)
    return dev
