"""The YOLO dataset around the label lines: class indices (real categories sorted by id), data.yaml (read by
PyYAML, as ultralytics reads it) and the images/ folder the yaml points at."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import yaml

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.records import instance_records
from mrseg.outputs.yolo import YoloWriter, data_yaml, link_image, yolo_class_index

# Label order is not id order, and label 2 is an unused slot.
CLASSES = [{"id": 13, "name": "stop sign"}, {"id": 12, "name": "N/A"}, {"id": 1, "name": "person"}]


def test_data_yaml_names_real_categories_by_id_and_points_at_images():
    text = data_yaml(CLASSES)
    data = yaml.safe_load(text)
    assert data["names"] == {0: "person", 1: "stop sign"} and data["nc"] == 2
    assert data["train"] == data["val"] == "images" and "path" not in data
    assert '0: "person"  # category_id 1' in text and '1: "stop sign"  # category_id 13' in text
    assert yolo_class_index(CLASSES) == {1: 0, 13: 1}
    odd = [{"id": 4, "name": 'a "quoted": name # not a comment'}]
    assert yaml.safe_load(data_yaml(odd))["names"] == {0: odd[0]["name"]}


def test_writer_uses_the_yaml_class_index_and_links_the_image(tmp_path, detections):
    photo = tmp_path / "src" / "photo.JPG"
    photo.parent.mkdir()
    photo.write_bytes(b"not decoded here")
    det = Detections(**{**detections.__dict__, "labels": np.array([3, 1, 3], np.int64)})  # person, stop sign
    item = InputItem(id=1, path=str(photo), rel_path="photo.JPG", name="sub/photo")
    writer = YoloWriter(tmp_path / "out", classes=CLASSES)
    writer.write(item, None, det, instance_records(det, CLASSES))
    lines = (tmp_path / "out" / "yolo" / "labels" / "sub" / "photo.txt").read_text().splitlines()
    names = yaml.safe_load(data_yaml(CLASSES))["names"]
    assert [names[int(line.split()[0])] for line in lines] == ["person", "stop sign", "person"]
    image = tmp_path / "out" / "yolo" / "images" / "sub" / "photo.JPG"
    assert image.read_bytes() == photo.read_bytes() and os.path.samefile(image, photo)  # a hard link here

    # a video frame has no image file to link: its pixels are written as a JPEG
    frame = InputItem(id=2, path=str(photo), rel_path="v/000001.jpg", frame=1, video="v.mp4", name="v/000001")
    pixels = np.zeros((60, 80, 3), np.uint8)
    pixels[10:30, 20:60] = (255, 40, 0)
    writer.write(frame, pixels, Detections(80, 60), [])
    written = cv2.imread(str(tmp_path / "out" / "yolo" / "images" / "v" / "000001.jpg"))
    diff = np.abs(written[..., ::-1].astype(int) - pixels)  # JPEG: exact away from the colour edges
    assert written.shape == (60, 80, 3) and diff[14:26, 24:56].max() <= 8 and diff[40:, :].max() <= 8
    with pytest.raises(ValueError, match="no pixels given for video frame v/000001.jpg"):
        writer.write(frame, None, Detections(80, 60), [])


@pytest.mark.parametrize("fail", [("link",), ("link", "symlink")])
def test_link_image_falls_back_to_symlink_then_copy(tmp_path, monkeypatch, fail):
    src = tmp_path / "a.png"
    src.write_bytes(b"png bytes")

    def refuse(*args, **kwargs):
        raise OSError("not supported here")

    for name in fail:
        monkeypatch.setattr(os, name, refuse)
    dst = tmp_path / "yolo" / "images" / "a.png"
    link_image(src, dst)
    link_image(src, dst)  # again, as on --resume: replaced, no error
    assert dst.read_bytes() == b"png bytes"
    assert dst.is_symlink() == (fail == ("link",))
    assert [p.name for p in dst.parent.iterdir()] == ["a.png"]  # no temporary left
