"""YoloWriter: YOLO-seg label files parse back to polygons that cover the masks."""

from __future__ import annotations

import cv2
import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.masks import polygons_to_mask
from mrseg.outputs.records import instance_records
from mrseg.outputs.yolo import YoloWriter, merge_parts


def _parse(text: str, w: int, h: int):
    out = []
    for line in text.splitlines():
        vals = line.split()
        coords = np.array(vals[1:], float).reshape(-1, 2)
        assert coords.min() >= 0 and coords.max() <= 1
        out.append((int(vals[0]), coords * (w, h)))
    return out


def test_yolo_labels_round_trip(tmp_path, detections, classes, iou):
    writer = YoloWriter(tmp_path)
    item = InputItem(id=1, path="a.jpg", rel_path="sub/a.jpg", name="sub/a")
    writer.write(item, None, detections, instance_records(detections, classes))
    writer.close()
    parsed = _parse((tmp_path / "yolo" / "labels" / "sub" / "a.txt").read_text(), 80, 60)
    assert [c for c, _ in parsed] == [0, 1, 2]  # label - 1
    # Single part: exact polygon; two parts: one bridged ring that still covers both (cv2 rasterises, as
    # Ultralytics does).
    assert iou(polygons_to_mask([parsed[0][1].reshape(-1).tolist()], 60, 80), detections.masks[0]) >= 0.95
    ring = np.zeros((60, 80), np.uint8)
    cv2.fillPoly(ring, [np.round(parsed[1][1]).astype(np.int32)], 1)
    assert iou(ring, detections.masks[1]) >= 0.85


def test_merge_parts_visits_every_vertex():
    a = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    b = np.array([[10, 10], [12, 10], [12, 12]], float)
    ring = merge_parts([a, b])
    assert len(ring) == len(a) + len(b) + 2
    assert {tuple(p) for p in ring} == {tuple(p) for p in np.concatenate([a, b])}


def test_empty_image_gives_empty_file(tmp_path, classes):
    YoloWriter(tmp_path).write(InputItem(id=1, path="e.jpg", rel_path="e.jpg"), None, Detections(9, 9), [])
    assert (tmp_path / "yolo" / "labels" / "e.txt").read_text() == ""
