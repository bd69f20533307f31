"""`python -m mrseg predict` with default options (every format asked for) on real photos, its files read by
their consumers' own libraries and compared with the Python `Predictor` on the same files:

- results.json (pycocotools `loadRes` / `annToMask`) and predictions.jsonl (`pycocotools.mask.decode`) hold
  exactly the Predictor's masks (IoU 1.0), whatever `--mask-format` says;
- no file names a category its category list lacks: COCO's "N/A" slots, which the seeded 91-label model does
  predict on these photos, are never emitted, and `loadCats` works for every annotation;
- yolo/data.yaml passes ultralytics' own `check_det_dataset` from another working directory, and its
  `YOLODataset` reads the labels with the documented class index -> category id mapping.

Photos: scikit-image's bundled samples (see tests/engine/conftest.py `skimage_photos`), written as JPEG.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from mrseg.cli import main
from mrseg.engine.predict.predictor import Predictor
from mrseg.model.coco_classes import COCO_LABEL_NAMES

PHOTOS = ("astronaut", "coffee", "chelsea", "motorcycle", "ihc")
FORMATS = "coco,coco-results,jsonl,labelme,yolo"


def _mrseg(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "mrseg", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


@pytest.fixture(scope="module")
def run(tiny_coco_weights, skimage_photos, tmp_path_factory):
    """One CLI run with default options; also the in-process Predictor's detections for the same files."""
    import torch

    root = tmp_path_factory.mktemp("fidelity")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        cv2.imwrite(str(photos / f"{name}.jpg"), skimage_photos[name][..., ::-1])
    out = root / "out"
    done = _mrseg("predict", photos, "--weights", tiny_coco_weights, "--out", out, "--format", FORMATS, "-q")
    assert done.returncode == 0, done.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI ran: another thread count may flip a mask pixel at exactly 0.5
    try:
        predictor = Predictor(tiny_coco_weights, device="cpu")
        expected = {name: predictor(photos / f"{name}.jpg") for name in PHOTOS}
        predictor.keep_labels = None  # the raw model output, placeholders included
        unfiltered = {name: predictor(photos / f"{name}.jpg") for name in PHOTOS}
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "predictor": predictor, "expected": expected, "unfiltered": unfiltered, "root": root}


def _by_name(coco: COCO) -> dict[str, int]:
    return {Path(im["file_name"]).stem: im["id"] for im in coco.dataset["images"]}


def test_results_json_and_jsonl_hold_the_predictors_exact_masks(run):
    out, expected = run["out"], run["expected"]
    assert sum(len(d) for d in expected.values()) >= 2  # something to compare
    with _quiet():
        gt = COCO(str(out / "annotations.json"))
        dt = gt.loadRes(str(out / "results.json"))
    classes = run["predictor"].classes
    for name, image_id in _by_name(gt).items():
        det = expected[name]
        results = dt.loadAnns(dt.getAnnIds(imgIds=[image_id]))
        assert len(results) == len(det)
        for res, mask, label, score in zip(results, det.masks, det.labels, det.scores, strict=True):
            assert res["category_id"] == classes[label - 1]["id"]
            assert res["score"] == pytest.approx(float(score), abs=1e-5)
            got = dt.annToMask(res).astype(bool)
            assert (got & mask).sum() == (got | mask).sum() > 0  # IoU exactly 1.0

    for line in (out / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        det = expected[Path(record["image"]["file_name"]).stem]
        assert len(record["instances"]) == len(det)
        for inst, mask in zip(record["instances"], det.masks, strict=True):
            assert "polygons" not in inst
            rle = {"size": inst["segmentation"]["size"], "counts": inst["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), mask)


def test_no_output_names_an_undeclared_or_placeholder_category(run):
    out = run["out"]
    placeholders = {i for i, n in enumerate(COCO_LABEL_NAMES) if n == "N/A"}
    raw_labels = {int(lab) for d in run["unfiltered"].values() for lab in d.labels}
    assert raw_labels & placeholders, "the photos should make the seeded model predict an N/A slot"
    assert raw_labels - placeholders, "... and real classes"

    with _quiet():
        gt = COCO(str(out / "annotations.json"))
        dt = gt.loadRes(str(out / "results.json"))
    declared = {c["id"] for c in gt.dataset["categories"]}
    assert declared == {i for i, n in enumerate(COCO_LABEL_NAMES) if n not in ("N/A", "__background__")}
    for coco in (gt, dt):
        for ann in coco.dataset["annotations"]:
            assert coco.loadCats(ann["category_id"])[0]["name"] == COCO_LABEL_NAMES[ann["category_id"]]
    # The filtered detections are the unfiltered ones minus the placeholders, nothing else changed.
    for name, det in run["expected"].items():
        raw = run["unfiltered"][name]
        keep = ~np.isin(raw.labels, list(placeholders))
        np.testing.assert_array_equal(det.labels, raw.labels[keep])
        np.testing.assert_array_equal(det.masks, raw.masks[keep])
    for path in (out / "labelme").glob("*.json"):
        names = {s["label"] for s in json.loads(path.read_text())["shapes"]}
        assert "N/A" not in names and names <= {c["name"] for c in gt.dataset["categories"]}


def test_yolo_class_indices_follow_the_documented_mapping(run):
    out = run["out"]
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    with _quiet():
        gt = COCO(str(out / "annotations.json"))
    real = sorted(gt.dataset["categories"], key=lambda c: c["id"])
    assert data["names"] == {i: c["name"] for i, c in enumerate(real)} and data["nc"] == len(real)
    for name, image_id in _by_name(gt).items():
        lines = (out / "yolo" / "labels" / f"{name}.txt").read_text().splitlines()
        yolo_ids = {real[int(line.split()[0])]["id"] for line in lines}
        assert yolo_ids <= {a["category_id"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))}


def test_yolo_dataset_passes_ultralytics_check_from_another_cwd(run, monkeypatch):
    utils = pytest.importorskip("ultralytics.data.utils")
    from ultralytics.data.dataset import YOLODataset

    monkeypatch.setattr(utils, "check_font", lambda *a, **k: None)  # it would download a font
    elsewhere = run["root"] / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    monkeypatch.chdir(elsewhere)
    yolo = run["out"] / "yolo"
    data = utils.check_det_dataset(str(yolo / "data.yaml"), autodownload=False)
    assert Path(data["train"]) == Path(data["val"]) == (yolo / "images").resolve()
    dataset = YOLODataset(img_path=data["val"], data=data, task="segment", augment=False, imgsz=128)
    assert sorted(Path(lab["im_file"]).stem for lab in dataset.labels) == sorted(PHOTOS)
    for lab in dataset.labels:
        text = (yolo / "labels" / f"{Path(lab['im_file']).stem}.txt").read_text().splitlines()
        assert sorted(lab["cls"].ravel().astype(int).tolist()) == sorted(int(t.split()[0]) for t in text)


REFUSED = [("N/A", "an unused slot"), ("26", "an unused slot"), ("zebr", "not a class")]


@pytest.mark.parametrize(("wanted", "what"), REFUSED)
def test_classes_rejects_placeholders_and_unknown_names(run, tiny_coco_weights, wanted, what):
    out = run["root"] / f"refused-{wanted.replace('/', '')}"
    args = ["predict", str(run["root"] / "photos"), "--weights", str(tiny_coco_weights), "--out", str(out)]
    done = CliRunner().invoke(main, [*args, "--classes", f"person,{wanted}"])
    assert done.exit_code == 1
    assert f"'{wanted}' is {what}" in done.stderr and "person (1), bicycle (2)" in done.stderr
    assert "N/A (" not in done.stderr
