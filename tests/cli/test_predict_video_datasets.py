"""`mrseg predict VIDEO --format yolo,labelme`: a video frame has no image file, so both formats write each
frame as a JPEG beside their files. ultralytics loads the YOLO dataset (every frame an image with its
labels), every labelme file's `imagePath` opens its frame, and `--exist-ok` removes the
frames with the rest of the run's files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mrseg.cli import main
from tests.engine.conftest import write_moving_box_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def test_video_frames_are_images_of_the_yolo_and_labelme_datasets(tiny_weights, tmp_path, monkeypatch):
    from ultralytics.data import utils
    from ultralytics.data.dataset import YOLODataset

    video = write_moving_box_video(
        tmp_path / "clip.mp4", frames=4, size=(128, 96), box=(10, 20, 50, 70), step=8
    )
    out = tmp_path / "out"
    args = ["predict", str(video), "--weights", str(tiny_weights), "--out", str(out), "--workers", "0", "-q"]
    result = CliRunner().invoke(main, [*args, "--score", "0.2", "--format", "yolo,labelme"])
    assert result.exit_code == 0, result.output

    capture = cv2.VideoCapture(str(video))
    decoded = [capture.read()[1] for _ in range(4)]
    frames = sorted((out / "yolo" / "images" / "clip").glob("*.jpg"))
    assert [f.stem for f in frames] == [f"{k:06d}" for k in range(4)]
    for path, bgr in zip(frames, decoded, strict=True):  # the decoded frame, as JPEG
        assert np.abs(cv2.imread(str(path)).astype(int) - bgr).mean() < 2

    monkeypatch.setattr(utils, "check_font", lambda *a, **k: None)  # it would download a font
    monkeypatch.chdir(tmp_path)
    data = utils.check_det_dataset(str(out / "yolo" / "data.yaml"), autodownload=False)
    dataset = YOLODataset(img_path=data["val"], data=data, task="segment", augment=False, imgsz=128)
    assert sorted(lab["im_file"].rsplit("/", 1)[-1] for lab in dataset.labels) == [f.name for f in frames]
    lines = sum(
        len((out / "yolo" / "labels" / "clip" / f"{f.stem}.txt").read_text().splitlines()) for f in frames
    )
    assert lines == sum(len(lab["cls"]) for lab in dataset.labels) > 0

    for k in range(4):
        path = out / "labelme" / "clip" / f"{k:06d}.json"
        doc = json.loads(path.read_text())
        # labelme's LabelFile opens imagePath joined to the json file's folder (its Qt-free part is not
        # importable alone, unlike its shape code)
        image = cv2.imread(str(path.parent / doc["imagePath"]))
        assert image is not None and image.shape == (96, 128, 3) == (doc["imageHeight"], doc["imageWidth"], 3)
        assert np.abs(image.astype(int) - decoded[k]).mean() < 2

    owned = (out / ".mrseg" / "owned.txt").read_text().splitlines()
    assert {"yolo/images/clip/000003.jpg", "labelme/clip/000003.jpg"} <= set(owned)
    result = CliRunner().invoke(main, [*args, "--exist-ok", "--format", "coco"])
    assert result.exit_code == 0, result.output
    assert not (out / "labelme").exists() and not list((out / "yolo").rglob("*.jpg"))
    assert [f.name for f in (out / "yolo").rglob("*") if f.is_file()] == ["clip.cache"]  # ultralytics' stays
