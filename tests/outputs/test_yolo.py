"""YoloWriter: YOLO-seg label files parse back to polygons that cover the masks."""

from __future__ import annotations

import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.records import instance_records
from mrseg.outputs.yolo import YoloWriter, merge_parts
from tests.outputs.consumers import yolo_mask


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
    # Through ultralytics' polygon2mask: single part near exact; two parts: one bridged ring that covers both
    # (plus the bridge's pixels); the ring with a hole: the hole cut in by a bridge.
    lines = (tmp_path / "yolo" / "labels" / "sub" / "a.txt").read_text().splitlines()
    assert iou(yolo_mask(lines[0], 60, 80), detections.masks[0]) >= 0.95
    assert iou(yolo_mask(lines[1], 60, 80), detections.masks[1]) >= 0.9
    assert iou(yolo_mask(lines[2], 60, 80), detections.masks[2]) >= 0.95


def test_merge_parts_visits_every_vertex():
    a = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    b = np.array([[10, 10], [12, 10], [12, 12]], float)
    ring = merge_parts([a, b])
    assert len(ring) == len(a) + len(b) + 2
    assert {tuple(p) for p in ring} == {tuple(p) for p in np.concatenate([a, b])}


def test_empty_image_gives_empty_file(tmp_path, classes):
    YoloWriter(tmp_path).write(InputItem(id=1, path="e.jpg", rel_path="e.jpg"), None, Detections(9, 9), [])
    assert (tmp_path / "yolo" / "labels" / "e.txt").read_text() == ""


def test_a_far_speck_is_left_out_when_its_bridge_costs_more_than_it_brings():
    """A blob and a 1-px speck 60 px away: the bridge to the speck would draw ~60 wrong pixels for 1 right
    one, so the ring leaves the speck out (and counts it); a speck 6 px from the blob is kept."""
    import cv2
    import numpy as np

    from mrseg.outputs.mask_crop import MaskCrop
    from mrseg.outputs.masks import mask_to_polygons
    from mrseg.outputs.yolo import _ring, merge_parts, ring_iou

    for speck_x, kept in ((90, False), (33, True)):
        mask = np.zeros((60, 100), bool)
        cv2.circle(mask.view(np.uint8), (15, 30), 12, 1, -1)
        mask[30, speck_x] = True
        crop = MaskCrop.from_mask(mask)
        parts = [np.asarray(p, float).reshape(-1, 2) for p in mask_to_polygons(crop, 1.0, convention="yolo")]
        assert len(parts) == 2
        ring, left_out = _ring(parts, [], crop)
        assert left_out == (0 if kept else 1)
        assert ring_iou(ring, crop.tightened()) >= ring_iou(merge_parts(parts), crop.tightened())
