"""mrseg.export.runtime: `mrseg.Predictor(weights="model.onnx")` runs an exported file through onnxruntime and
gives the same Detections as the PyTorch model."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import mrseg
from mrseg.export import export_model
from mrseg.export.runtime import load_onnx

_CONFTEST = Path(__file__).parent / "conftest.py"  # the small seeded model, defined once
_spec = importlib.util.spec_from_file_location("_export_conftest", _CONFTEST)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = helpers.small_model()
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_model(model=model, info=helpers.small_info(), out=out, check=False)
    return model, out


def test_load_model_returns_the_eval_contract_and_classes(exported):
    _, path = exported
    model = load_onnx(path)
    info = model.info
    assert info.arch == "r18-fpn" and [c["name"] for c in info.classes] == ["date", "fig", "hazelnut"]
    (out,) = model([helpers.picture_tensor(100, 120)])
    assert {"boxes", "scores", "labels", "masks"} <= set(out)
    assert out["masks"].dtype == torch.bool and out["masks"].shape[1:] == (1, 100, 120)
    assert out["labels"].min() >= 1 and out["labels"].max() <= 3


def test_predictor_with_onnx_weights_matches_pytorch(exported):
    model, path = exported
    image = helpers.picture_array(128, 160, seed=21)
    got = mrseg.Predictor(weights=str(path), device="cpu", score=0.0)(image)
    expected = mrseg.Predictor(model=model, model_classes=helpers.CLASSES, device="cpu", score=0.0)(image)
    assert len(got) == len(expected) == 20
    order_g, order_e = np.argsort(-got.scores, kind="stable"), np.argsort(-expected.scores, kind="stable")
    np.testing.assert_allclose(got.boxes[order_g], expected.boxes[order_e], atol=1e-2)
    np.testing.assert_array_equal(got.labels[order_g], expected.labels[order_e])
    inter = (got.masks[order_g] & expected.masks[order_e]).sum((1, 2))
    union = (got.masks[order_g] | expected.masks[order_e]).sum((1, 2))
    assert (inter / np.maximum(union, 1)).min() >= 0.99
