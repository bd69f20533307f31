"""Device selection for predict (issue 13, point 8), exercised on a CPU machine by faking what CUDA reports.

- `--device auto` with a GPU but an mrseg_kernels built without CUDA runs on the CPU (with a note) instead of
  picking CUDA and failing at the first batch; an explicit CUDA device then fails at start, clearly.
- A chosen CUDA device becomes the process's current device (`torch.cuda.set_device`), so pinned memory and
  index-less CUDA calls of every torchrun rank stay off GPU 0.
- `.onnx` models ask onnxruntime's CUDA provider for the device's index, and say (in `runs_on`) which
  provider runs, with a warning when this onnxruntime has no CUDA provider.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import mrseg_kernels
from mrseg.engine import predictor as predictor_mod
from mrseg.engine.device import DeviceError, resolve_device
from mrseg.export.spec import METADATA_KEY, GraphSpec


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two fake GPUs; returns the list of devices passed to torch.cuda.set_device."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    return calls


def test_auto_falls_back_to_cpu_with_a_note_when_the_kernels_lack_cuda(fake_gpus, monkeypatch):
    monkeypatch.setattr(mrseg_kernels, "with_cuda", lambda: False)
    notes: list[str] = []
    assert resolve_device("auto", notes=notes) == torch.device("cpu")
    assert len(notes) == 1 and "built without CUDA" in notes[0]
    assert fake_gpus == []
    # An .onnx model doesn't run mrseg's RoIAlign: the GPU stays usable for it.
    assert resolve_device("auto", needs_kernels=False) == torch.device("cuda:0")


def test_an_explicit_cuda_device_without_cuda_kernels_fails_at_start(fake_gpus, monkeypatch):
    monkeypatch.setattr(mrseg_kernels, "with_cuda", lambda: False)
    with pytest.raises(DeviceError, match="built without CUDA.*--device cpu"):
        resolve_device("cuda:1")


def test_the_chosen_gpu_becomes_the_current_device(fake_gpus, monkeypatch):
    monkeypatch.setattr(mrseg_kernels, "with_cuda", lambda: True)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")  # a torchrun rank's own GPU
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert fake_gpus == [torch.device("cuda:1"), torch.device("cuda:1")]
    with pytest.raises(DeviceError, match="no such GPU.*has 2"):
        resolve_device("cuda:5")


def test_cpu_never_touches_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device on a CPU run"))
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.fixture
def onnx_file(tmp_path):
    """A one-node ONNX file carrying mrseg's metadata (the provider choice never runs it)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    spec = GraphSpec(height=64, width=64, batch=1, min_size=64, max_size=64, mean=(0, 0, 0), std=(1, 1, 1))
    helper.set_model_props(model, {METADATA_KEY: spec.to_json()})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _fake_ort(monkeypatch, available, runs):
    import onnxruntime as ort

    asked = []

    class Session:
        def __init__(self, path, providers):
            asked.append(providers)

        def get_providers(self):
            return runs

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(ort, "InferenceSession", Session)
    return asked


def test_onnx_asks_the_cuda_provider_for_the_device_index(onnx_file, monkeypatch):
    from mrseg.export.runtime import load_onnx

    cuda_cpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    asked = _fake_ort(monkeypatch, cuda_cpu, cuda_cpu)
    model = load_onnx(onnx_file, "cuda:1")
    assert asked == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]]
    assert model.runs_on == "onnxruntime CUDAExecutionProvider on cuda:1"


def test_onnx_without_a_cuda_provider_says_it_runs_on_the_cpu(onnx_file, monkeypatch):
    from mrseg.export.runtime import load_onnx

    asked = _fake_ort(monkeypatch, ["CPUExecutionProvider"], ["CPUExecutionProvider"])
    model = load_onnx(onnx_file, "cuda:0")
    assert asked == [["CPUExecutionProvider"]]
    assert model.runs_on.startswith("onnxruntime CPUExecutionProvider [warning:")
    assert "onnxruntime-gpu" in model.runs_on
    # onnxruntime has the provider but can't start it (missing CUDA libraries): said too.
    _fake_ort(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    assert "could not start its CUDA provider" in load_onnx(onnx_file, "cuda:0").runs_on


def test_device_note_names_the_device_and_what_runs(tiny_model, tiny_classes):
    p = predictor_mod.Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", fuse=False)
    assert predictor_mod.device_note(p) == "device: cpu, model run by torch"
