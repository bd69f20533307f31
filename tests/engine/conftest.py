"""A tiny Mask R-CNN checkpoint with seeded random weights that still finds a few instances per image.

Random RPN weights would send ~1000 proposals through the box head (seconds per image on a shared CPU); here
the RPN regresses every anchor to the whole image, so NMS leaves one proposal per FPN level, and the class
biases make the (random) classifier give each of the 3 classes a fair score. The box and mask heads stay
random, so boxes and masks still differ from image to image. tests/cli/conftest.py loads this file too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

NUTS = Path(__file__).resolve().parents[1] / "assets" / "nuts"
CLASSES = [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}, {"id": 3, "name": "hazelnut"}]


def rpn_to_whole_image(model) -> None:
    """Makes the RPN regress every anchor to the whole image, so NMS leaves one proposal per FPN level (call
    under torch.no_grad)."""
    deltas = model.rpn.head.anchor_deltas
    deltas.weight.zero_()
    whole = torch.tensor([0.0, 0.0, math.log(1000.0 / 16), math.log(1000.0 / 16)])
    deltas.bias.copy_(whole.repeat(deltas.bias.numel() // 4))




def load_example(*parts: str):
    """A script of examples/ (e.g. `load_example("shapes", "generate.py")`) loaded as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / Path(*parts)
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def write_moving_box_video(
    path: Path, *, frames: int, size: tuple[int, int], box: tuple[int, int, int, int], step: int
) -> Path:
    """An mp4v clip of `frames` frames of `size` (w, h): a filled box `box` (x0, y0, x1, y1) moving `step` px
    right per frame on a dark background (something for a model to track)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    x0, y0, x1, y1 = box
    for t in range(frames):
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.rectangle(img, (x0 + step * t, y0), (x1 + step * t, y1), (60, 180, 240), -1)
        writer.write(img)
    writer.release()
    return path

def build_tiny_model(seed: int = 0, **model_kwargs):
    from mrseg.model.zoo import build_model

    torch.manual_seed(seed)
    model = build_model("r18-fpn", len(CLASSES), min_size=96, max_size=128, **model_kwargs)
    with torch.no_grad():
        rpn_to_whole_image(model)
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 1.0, 0.9, 0.8]))
    return model.eval()


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    from mrseg.model.checkpoint_format import make_checkpoint

    model = build_tiny_model(seed)
    torch.save(make_checkpoint(model, arch="r18-fpn", classes=CLASSES, min_size=96, max_size=128), path)
    return path


@pytest.fixture()
def one_thread():
    """The test runs with one torch thread (in this process; torchrun children get OMP_NUM_THREADS=1), so
    results can be compared exactly: another thread count sums in another order, and a mask pixel whose
    probability sits at 0.5 may flip. A module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def terminal(monkeypatch):
    """stderr taken for a 200-column terminal (rich reads TTY_COMPATIBLE and COLUMNS), so progress bars are
    drawn; `strip_ansi` reads what they drew."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "200")


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.fixture(scope="session")
def pycocotools_printed() -> dict[str, list[float]]:
    """The 12 figures per iou type that pycocotools printed for the COCO API's val2014 sample and its fake
    results (tests/assets/cocoapi-val2014-100/val2014_fake_eval_res.txt)."""
    assets = Path(__file__).resolve().parents[1] / "assets"
    path = assets / "cocoapi-val2014-100" / "val2014_fake_eval_res.txt"
    figures: dict[str, list[float]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("type="):
            current = line.split("=", 1)[1].strip()
            figures[current] = []
        elif current and "] = " in line:
            figures[current].append(float(line.rsplit("=", 1)[1]))
    return figures


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


def load_skimage_photos() -> dict[str, np.ndarray]:
    """Real RGB uint8 photos shipped with scikit-image (`skimage.data`, BSD-3 / public domain; see its
    README): nothing is read from outside the installed packages."""
    data = pytest.importorskip("skimage.data")
    gray = data.camera()
    return {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "camera": np.repeat(gray[..., None], 3, axis=2),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field(),
        "ihc": data.immunohistochemistry(),
    }


# COCO labels the seeded 90-class model competes on: real ones and "N/A" slots (12, 26, 69).
COCO_TEST_LABELS = (1, 12, 18, 26, 64, 69)


def build_tiny_coco_model(seed: int = 0):
    """A tiny seeded r18-fpn with torchvision's 91 COCO labels (90 + background) whose classifier, calibrated
    on the scikit-image photos, gives each label of `COCO_TEST_LABELS` (real classes AND "N/A" slots) a fair
    chance of scoring >= 0.5 on a proposal, and every other label none. RPN as in `build_tiny_model`."""
    from mrseg.model.zoo import build_model

    torch.manual_seed(seed)
    model = build_model("r18-fpn", 90, min_size=96, max_size=128).eval()
    with torch.no_grad():
        rpn_to_whole_image(model)
        cls = model.roi_heads.box_predictor.cls_score
        feats = []
        hook = cls.register_forward_hook(lambda mod, args, out: feats.append(args[0]))
        model([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in load_skimage_photos().values()])
        hook.remove()
        chosen = torch.zeros(91, dtype=torch.bool)
        chosen[list(COCO_TEST_LABELS)] = True
        weight = torch.where(chosen[:, None], cls.weight, torch.zeros_like(cls.weight))
        logits = torch.cat(feats) @ weight.T
        scale = torch.where(chosen, 12.0 / (logits.std(0) + 1e-6), torch.zeros(91))
        cls.weight.copy_(weight * scale[:, None])
        cls.bias.copy_(torch.where(chosen, -logits.mean(0) * scale, torch.full((91,), -30.0)))
    return model


def save_tiny_coco_checkpoint(path: Path, seed: int = 0) -> Path:
    from mrseg.model.checkpoint_format import make_checkpoint
    from mrseg.model.coco_classes import coco_label_classes

    model = build_tiny_coco_model(seed)
    checkpoint = make_checkpoint(
        model, arch="r18-fpn", classes=coco_label_classes(), min_size=96, max_size=128
    )
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def skimage_photos() -> dict[str, np.ndarray]:
    return load_skimage_photos()


@pytest.fixture(scope="session")
def tiny_coco_weights(tmp_path_factory) -> Path:
    return save_tiny_coco_checkpoint(tmp_path_factory.mktemp("weights") / "tiny-coco.pt")
