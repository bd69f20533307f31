"""The CLI as a user runs it, checked against oracles we did not write.

One `mrseg predict` run (default options, every dataset format) over photos of several sizes and aspect
ratios, with seeded torchvision R50-FPN weights given as a bare torchvision state dict (`--arch r50-fpn`), and
torchvision's own `MaskRCNN` with the same weights as the oracle for boxes, scores, labels and masks. The
weights make masks crisp and fragmented (mask logits scaled up), and raise a few classes above the score
threshold, one of them an unnamed COCO slot ("N/A", label 12) that no output may name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mrseg.model.coco_classes import COCO_LABEL_NAMES

REPO = Path(__file__).resolve().parents[2]
NUTS = REPO / "tests" / "assets" / "nuts" / "images"
SCORE = 0.5  # mrseg predict's default --score
RAISED_LABELS = (1, 12, 18)  # person, an unnamed slot, dog


def _photos() -> dict[str, np.ndarray]:
    """RGB uint8 photos of every shape a user feeds: landscape, portrait, square, wide, tiny."""
    from skimage import data

    nuts = sorted(NUTS.glob("*.jpg"))
    assert nuts, f"the nuts photos are missing from {NUTS} (tests/assets is part of the repository)"
    nut = cv2.cvtColor(cv2.imread(str(nuts[0])), cv2.COLOR_BGR2RGB)
    astronaut = data.astronaut()
    coffee = data.coffee()
    return {
        "nut_800x600": nut,
        "astronaut_portrait_300x460": cv2.resize(astronaut[:, 100:400], (300, 460)),
        "coffee_wide_700x240": cv2.resize(coffee, (700, 240)),
        "chelsea_square_320x320": cv2.resize(data.chelsea(), (320, 320)),
        "rocket_tiny_40x30": cv2.resize(data.rocket(), (40, 30), interpolation=cv2.INTER_AREA),
    }


def _oracle_model() -> torch.nn.Module:
    from tests.model.conftest import build_torchvision_maskrcnn

    model = build_torchvision_maskrcnn(50, seed=3)
    with torch.no_grad():
        bias = model.roi_heads.box_predictor.cls_score.bias
        bias.fill_(-4.0)
        bias[list(RAISED_LABELS)] = 2.0  # about 2 in 3 of the 100 detections score >= 0.5
    return model.eval()


@dataclass
class OracleDetection:
    box: np.ndarray  # float [4] xyxy
    score: float
    label: int  # torchvision label == COCO category id
    mask: np.ndarray  # bool [H, W]


@dataclass
class PredictRun:
    out: Path
    images_dir: Path
    weights: Path  # torchvision's state dict
    images: dict[str, np.ndarray]  # file name -> RGB uint8 [H, W, 3]
    oracle: dict[str, list[OracleDetection]]  # file name -> named detections scoring >= SCORE
    unnamed: int  # oracle detections of unnamed classes (must appear nowhere)
    stderr: str


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "mrseg", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


@pytest.fixture(scope="session")
def cli():
    """run_cli: `python -m mrseg ARGS...` in a subprocess, as a user runs it."""
    return run_cli


@pytest.fixture(scope="session")
def predict_run(tmp_path_factory) -> PredictRun:
    root = tmp_path_factory.mktemp("conformance")
    images_dir = root / "images"
    images_dir.mkdir()
    images = {}
    for name, rgb in _photos().items():
        file = f"{name}.png"  # lossless, so every decoder gives the oracle the same pixels
        cv2.imwrite(str(images_dir / file), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images[file] = rgb
    model = _oracle_model()
    weights = root / "torchvision_r50.pth"
    torch.save(model.state_dict(), weights)

    oracle, unnamed = {}, 0
    with torch.no_grad():
        for file, rgb in images.items():
            out = model([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255])[0]
            dets = []
            fields = (out["boxes"], out["scores"], out["labels"], out["masks"][:, 0])
            for box, score, label, prob in zip(*(f.numpy() for f in fields), strict=True):
                if score < SCORE:
                    continue
                if COCO_LABEL_NAMES[label] == "N/A":
                    unnamed += 1
                    continue
                dets.append(OracleDetection(box, float(score), int(label), prob > 0.5))
            oracle[file] = dets
    out_dir = root / "out"
    result = run_cli(
        "predict", str(images_dir), "--weights", str(weights), "--arch", "r50-fpn",
        "--format", "coco,coco-results,jsonl,labelme,yolo", "--out", str(out_dir), "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, f"mrseg predict failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return PredictRun(out_dir, images_dir, weights, images, oracle, unnamed, result.stderr)
