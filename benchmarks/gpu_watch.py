"""nvidia-smi sampling for the benchmarks: utilisation and memory of the GPU a torch device runs on, while a
timed pass runs (`with GpuSampler(device): ...`)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading

import torch


def nvidia_smi_id(device: torch.device) -> str | None:
    """The `nvidia-smi -i` id of a torch CUDA device (through CUDA_VISIBLE_DEVICES when set)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    return parts[index] if index < len(parts) else None


class GpuSampler:
    """`with sampler:` samples nvidia-smi's utilization.gpu (%) and memory.used (MiB) every 100 ms in a
    background process; the samples of every `with` block add up. Inactive (and says so) off CUDA or when
    nvidia-smi is missing."""

    def __init__(self, device: torch.device, interval_ms: int = 100):
        self.device = device
        self.interval_ms = interval_ms
        self.samples: list[tuple[float, float]] = []
        self.why_not = None
        if device.type != "cuda":
            self.why_not = f"device {device.type}"
        elif shutil.which("nvidia-smi") is None:
            self.why_not = "not on PATH"
        self._proc = self._reader = None

    def __enter__(self) -> GpuSampler:
        if self.why_not:
            return self
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        cmd += ["-lms", str(self.interval_ms)]
        gpu = nvidia_smi_id(self.device)
        if gpu is not None:
            cmd += ["-i", gpu]
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            self.why_not = f"could not start ({e})"
            return self
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:  # "[N/A]" or a header
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._reader.join(timeout=5)
            self._proc = self._reader = None

    def summary(self) -> str:
        if self.why_not:
            return f"nvidia-smi: not available ({self.why_not})"
        if not self.samples:
            return "nvidia-smi: no samples (the pass was shorter than its start-up?)"
        util = [u for u, _ in self.samples]
        return (
            f"nvidia-smi: utilisation mean {statistics.fmean(util):.0f}% p50 {statistics.median(util):.0f}% "
            f"max {max(util):.0f}%, memory used max {max(m for _, m in self.samples):.0f} MiB "
            f"({len(util)} samples)"
        )


