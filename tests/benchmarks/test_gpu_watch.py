"""benchmarks/gpu_watch.py: the nvidia-smi sampler parses its output and says when it can't sample."""

import os
import stat
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_watch  # noqa: E402


def test_off_cuda_it_says_not_available_and_samples_nothing():
    sampler = gpu_watch.GpuSampler(torch.device("cpu"))
    with sampler:
        pass
    assert sampler.samples == []
    assert sampler.summary().startswith("nvidia-smi: not available")


def test_without_nvidia_smi_on_path_it_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = gpu_watch.GpuSampler(torch.device("cuda", 0))
    with sampler:
        pass
    assert sampler.summary() == "nvidia-smi: not available (not on PATH)"


def test_it_parses_a_fake_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"  # prints three samples, one unreadable, then waits to be stopped
    lines = ["40, 1000", "[N/A], 1100", "80, 3000", "60, 2000"]
    fake.write_text("#!/bin/sh\n" + "".join(f"echo '{x}'\n" for x in lines) + "exec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu_watch, "nvidia_smi_id", lambda device: "0")
    sampler = gpu_watch.GpuSampler(torch.device("cuda", 0))
    with sampler:
        for _ in range(200):
            if len(sampler.samples) == 3:
                break
            time.sleep(0.01)
    assert sampler.samples == [(40.0, 1000.0), (80.0, 3000.0), (60.0, 2000.0)]
    summary = sampler.summary()
    assert "mean 60%" in summary and "p50 60%" in summary and "max 80%" in summary
    assert "memory used max 3000 MiB" in summary


def test_cuda_visible_devices_maps_the_torch_index(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-abc")
    assert gpu_watch.nvidia_smi_id(torch.device("cuda", 0)) == "3"
    assert gpu_watch.nvidia_smi_id(torch.device("cuda", 1)) == "GPU-abc"
    assert gpu_watch.nvidia_smi_id(torch.device("cuda", 2)) is None
