"""instance_records / image_record / record_line: COCO-annotation-like dicts from Detections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.masks import polygons_to_mask, rle_decode
from mrseg.outputs.records import image_record, instance_records, public_line, record_line


def test_instance_records_fields(detections, classes, iou):
    recs = instance_records(detections, classes)
    assert len(recs) == 3
    x0, y0, x1, y1 = detections.boxes[0].astype(float)
    assert recs[0]["bbox"] == [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
    assert [r["category_id"] for r in recs] == [1, 3, 7]
    assert [r["name"] for r in recs] == ["date", "fig", "hazel nut"]
    assert [r["label"] for r in recs] == [1, 2, 3]
    assert recs[2]["score"] == pytest.approx(0.61234, abs=1e-5)
    assert [r["area"] for r in recs] == [int(m.sum()) for m in detections.masks]
    assert "track_id" not in recs[0]
    # segmentation: always the exact RLE, byte-identical to pycocotools' own encoding of the mask.
    for r, m in zip(recs, detections.masks, strict=True):
        expected = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert r["segmentation"] == {"size": [60, 80], "counts": expected["counts"].decode("ascii")}
    # polygons (annotations.json's approximation): where a polygon list can express the mask, not the ring.
    assert isinstance(recs[0]["polygons"], list) and len(recs[1]["polygons"]) == 2
    assert "polygons" not in recs[2]
    assert iou(polygons_to_mask(recs[1]["polygons"], 60, 80), detections.masks[1]) >= 0.95
    json.dumps(recs)


def test_rle_format_and_track_ids(make_dets, classes):
    det = make_dets(track=True)
    recs = instance_records(det, classes, mask_format="rle")
    assert all(isinstance(r["segmentation"], dict) and "polygons" not in r for r in recs)
    for r, m in zip(recs, det.masks, strict=True):
        np.testing.assert_array_equal(rle_decode(r["segmentation"]), m)
    assert [r["track_id"] for r in recs] == [5, 6, 7]


def test_masks_with_channel_dim_and_no_masks(detections, classes):
    det = Detections(**{**detections.__dict__, "masks": detections.masks[:, None]})
    assert instance_records(det, classes)[0]["area"] == int(detections.masks[0].sum())
    boxes_only = Detections(**{**detections.__dict__, "masks": None})
    rec = instance_records(boxes_only, classes)[0]
    assert "segmentation" not in rec
    assert rec["area"] == pytest.approx(rec["bbox"][2] * rec["bbox"][3], abs=0.05)


def test_empty_and_bad_label(classes):
    assert instance_records(Detections(width=4, height=4), classes) == []
    bad = Detections(
        width=4, height=4, boxes=np.zeros((1, 4), np.float32), scores=np.ones(1, np.float32),
        labels=np.array([4]),
    )  # fmt: skip
    with pytest.raises(ValueError, match="label 4 is outside 1..3"):
        instance_records(bad, classes)


def test_image_record_and_line(detections):
    item = InputItem(id=7, path="/x/a b.jpg", rel_path="sub/a b.jpg")
    assert image_record(item, detections) == {"id": 7, "file_name": "sub/a b.jpg", "width": 80, "height": 60}
    frame = InputItem(id=8, path="/v.mp4", rel_path="v/000004.jpg", frame=4, video="v.mp4", fps=25.0)
    assert image_record(frame, detections)["video"] == "v.mp4"
    line = record_line(frame, detections, [{"score": 1.0}])
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith('{"image": {"id": 8,')
    assert json.loads(line) == {"image": image_record(frame, detections), "instances": [{"score": 1.0}]}


def test_public_line_drops_polygons_only(detections, classes):
    item = InputItem(id=3, path="a.jpg", rel_path="a.jpg")
    journal = record_line(item, detections, instance_records(detections, classes)).encode()
    public = json.loads(public_line(journal))
    full = json.loads(journal)
    assert all("polygons" not in inst for inst in public["instances"])
    assert public["instances"] == [{k: v for k, v in i.items() if k != "polygons"} for i in full["instances"]]
    assert public["image"] == full["image"]
    rle_only = record_line(item, detections, instance_records(detections, classes, "rle")).encode()
    assert public_line(rle_only) is rle_only
    with pytest.raises(ValueError, match="mask_format"):
        instance_records(detections, classes, "mask")
