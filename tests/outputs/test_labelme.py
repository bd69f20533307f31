"""LabelmeWriter: files labelme opens, parsed back to the same polygons, inside the output folder."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from mrseg.outputs.detections import InputItem
from mrseg.outputs.labelme import LabelmeWriter
from mrseg.outputs.records import instance_records
from tests.outputs.consumers import labelme_mask


def test_labelme_file_round_trip(tmp_path, detections, classes, iou):
    src = tmp_path / "data" / "sub" / "a b.jpg"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"x")
    out = tmp_path / "out"
    item = InputItem(id=1, path=str(src), rel_path="sub/a b.jpg")
    writer = LabelmeWriter(out)
    writer.write(item, None, detections, instance_records(detections, classes))
    writer.close()
    path = out / "labelme" / "sub" / "a b.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert set(doc) >= {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    assert doc["imageData"] is None and (doc["imageHeight"], doc["imageWidth"]) == (60, 80)
    # imagePath is relative to the json file, the way labelme resolves it.
    assert os.path.samefile(path.parent / doc["imagePath"], src)

    shapes = doc["shapes"]
    assert [s["label"] for s in shapes] == ["date", "fig", "fig", "hazel nut"]
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in shapes[:3])
    assert shapes[3]["shape_type"] == "mask"  # the ring has a hole: a polygon cannot express it
    assert shapes[0]["group_id"] is None and shapes[1]["group_id"] == shapes[2]["group_id"] == 1
    # labelme's own rasteriser gives the masks back.
    for k, shape_idx in ((0, [0]), (1, [1, 2]), (2, [3])):
        back = labelme_mask([shapes[i] for i in shape_idx], 60, 80)
        assert iou(back, detections.masks[k]) >= 0.95
    np.testing.assert_array_equal(labelme_mask([shapes[3]], 60, 80), detections.masks[2])
    assert shapes[0]["description"] == "score 0.900"


def test_labelme_video_frame_and_hostile_name(tmp_path, make_dets, classes):
    det = make_dets(track=True)
    out = tmp_path / "out"
    writer = LabelmeWriter(out)
    frame = InputItem(id=3, path="v.mp4", rel_path="v/000002.jpg", frame=2, video="v.mp4", name="v/000002")
    pixels = np.full((det.height, det.width, 3), 90, np.uint8)
    writer.write(frame, pixels, det, instance_records(det, classes))
    doc = json.loads((out / "labelme" / "v" / "000002.json").read_text())
    assert doc["imagePath"] == "000002.jpg"  # the frame, written beside the json (labelme's own layout)
    frame_image = cv2.imread(str(out / "labelme" / "v" / "000002.jpg"))
    assert frame_image.shape == pixels.shape and np.abs(frame_image.astype(int) - 90).max() <= 2
    assert {s["group_id"] for s in doc["shapes"]} == {5, 6, 7}
    writer.write(InputItem(id=4, path="x", rel_path="../../../evil.jpg"), None, det, [])
    assert (out / "labelme" / "evil.json").exists()
    assert not (tmp_path / "evil.json").exists()
    files = [p for p in tmp_path.rglob("*.json")]
    assert all(str(p).startswith(str(out)) for p in files)
