"""A tiny Mask R-CNN checkpoint with seeded random weights that still finds a few instances per image.

Random RPN weights would send ~1000 proposals through the box head (seconds per image on a shared CPU); here
the RPN regresses every anchor to the whole image, so NMS leaves one proposal per FPN level, and the class
biases make the (random) classifier give each of the 3 classes a fair score. The box and mask heads stay
random, so boxes and masks still differ from image to image. tests/cli/conftest.py loads this file too.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

NUTS = Path(__file__).resolve().parents[1] / "assets" / "nuts"
CLASSES = [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}, {"id": 3, "name": "hazelnut"}]


def build_tiny_model(seed: int = 0):
    from mrseg.model.zoo import build_model

    torch.manual_seed(seed)
    model = build_model("r18-fpn", len(CLASSES), min_size=96, max_size=128)
    with torch.no_grad():
        deltas = model.rpn.head.anchor_deltas
        deltas.weight.zero_()
        deltas.bias.copy_(
            torch.tensor([0.0, 0.0, math.log(1000.0 / 16), math.log(1000.0 / 16)]).repeat(
                deltas.bias.numel() // 4
            )
        )
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 1.0, 0.9, 0.8]))
    return model.eval()


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    model = build_tiny_model(seed)
    torch.save(
        {"format": "mrseg-checkpoint", "version": 1, "arch": "r18-fpn", "classes": CLASSES,
         "transform": {"min_size": 96, "max_size": 128}, "model": model.state_dict()},
        path,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_model():
    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_classes() -> list[dict]:
    return [dict(c) for c in CLASSES]


@pytest.fixture(scope="session")
def nuts_images() -> list[Path]:
    images = sorted((NUTS / "images").glob("*.jpg"))
    if not images:
        pytest.fail(f"the real test photos are not at {NUTS}/images (see tests/assets/PROVENANCE.md)")
    return images
