"""A small seeded r18-fpn Mask R-CNN for export tests: random weights, 160 x 128 input, at most 20 detections.

The RPN keeps 200 proposals (not 1000) so that a forward pass stays well under a second on a shared CPU; the
box and mask heads are random, so boxes, scores and masks differ from detection to detection.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from mrseg.model.zoo import ModelInfo, build_model

_spec = importlib.util.spec_from_file_location(
    "_mrseg_engine_conftest", Path(__file__).parents[1] / "engine" / "conftest.py"
)
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)
one_thread = _engine.one_thread  # one definition, in tests/engine/conftest.py

CLASSES = [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}, {"id": 3, "name": "hazelnut"}]
HEIGHT, WIDTH = 128, 160


def small_model(seed: int = 0, score_thresh: float = 0.05):
    torch.manual_seed(seed)
    model = build_model(
        "r18-fpn", len(CLASSES), min_size=HEIGHT, max_size=WIDTH, rpn_post_nms_top_n_train=200,
        rpn_post_nms_top_n_test=200, box_detections_per_img=20, box_score_thresh=score_thresh,
    )
    return model.eval()


def small_info() -> ModelInfo:
    return ModelInfo(arch="r18-fpn", classes=[dict(c) for c in CLASSES], source="test")


def picture_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 [H, W, 3] with smooth structure and shapes (a real photo is not needed for parity)."""
    from mrseg.export.exporter import synthetic_image

    return synthetic_image(height, width, seed)


def picture_tensor(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """The same as float [3, H, W] in 0..1, what the model takes."""
    return torch.from_numpy(picture_array(height, width, seed)).permute(2, 0, 1).float().div(255.0)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="session")
def make_model():
    return small_model


@pytest.fixture(scope="session")
def info():
    return small_info()


@pytest.fixture(scope="session")
def picture():
    return picture_tensor


@pytest.fixture(scope="session")
def picture_uint8():
    return picture_array


@pytest.fixture(scope="session")
def canvas():
    return HEIGHT, WIDTH


def eager_model(model, batch: int = 1, imgsz=None):
    """The PyTorch graph behind the same pre- and post-step as an exported file: the reference for parity."""
    from mrseg.export.exporter import graph_spec
    from mrseg.export.graph import InferenceGraph
    from mrseg.export.runtime import ExportedModel

    graph = InferenceGraph(model=model).eval()
    spec = graph_spec(model, small_info(), imgsz, batch)

    def run(canvas, sizes):
        with torch.no_grad():
            return graph(canvas, sizes)

    return ExportedModel(run, spec)


@pytest.fixture(scope="session")
def eager():
    return eager_model
