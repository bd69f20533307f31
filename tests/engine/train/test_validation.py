"""The validation during training scores the entries that results.json (and `mrseg eval --images`) hold for
the same detections: one conversion (`mrseg.outputs.records.coco_results`), checked here against a journal
written the way `mrseg predict` writes it, and against pycocotools' decoding of the masks."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import torch
from pycocotools.coco import COCO

from mrseg.engine.train.validation import detections_to_results
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.finalize import write_results
from mrseg.outputs.records import instance_records, record_line
from tests.outputs.conftest import CLASSES, make_detections


def _with_keypoints(det: Detections) -> Detections:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 60, (len(det), 5, 3)).astype(np.float32)
    points[..., 2] = 1.0  # torchvision's visibility for a predicted keypoint
    det.keypoints, det.keypoint_scores = points, rng.normal(size=(len(det), 5)).astype(np.float32)
    return det


def test_validation_entries_are_results_json_entries(tmp_path):
    det = _with_keypoints(make_detections(60, 80))
    journal = tmp_path / "records-0.jsonl"  # with polygons, as `mrseg predict` journals by default
    item = InputItem(id=4, path="x.jpg", rel_path="x.jpg")
    journal.write_text(record_line(item, det, instance_records(det, CLASSES)))
    write_results(tmp_path / "results.json", [journal])
    output = {
        "boxes": torch.from_numpy(det.boxes),
        "scores": torch.from_numpy(det.scores),
        "labels": torch.from_numpy(det.labels),
        "masks": torch.from_numpy(det.masks)[:, None],
        "keypoints": torch.from_numpy(det.keypoints),
        "keypoints_scores": torch.from_numpy(det.keypoint_scores),
    }
    results = detections_to_results(output, 4, CLASSES, 60, 80)
    written = json.loads((tmp_path / "results.json").read_text())
    assert all(r.pop("file_name") == "x.jpg" for r in written)  # for eval's matching; validation has GT ids
    assert results == written
    assert [r["category_id"] for r in results] == [1, 3, 7]
    assert all(r["keypoints"][2::3] == [2] * 5 for r in results)  # COCO's "labelled and visible"
    # against the detections themselves, not only the shared writer: xywh boxes, scores, keypoint x, y
    x1, y1, x2, y2 = det.boxes.T
    want = np.stack([x1, y1, x2 - x1, y2 - y1], 1)
    np.testing.assert_allclose([r["bbox"] for r in results], want, atol=0.006)
    np.testing.assert_allclose([r["score"] for r in results], det.scores, atol=6e-6)
    points = np.array([r["keypoints"] for r in results]).reshape(len(results), -1, 3)
    np.testing.assert_allclose(points[..., :2], det.keypoints[..., :2], atol=0.006)

    gt = COCO()
    gt.dataset = {"images": [{"id": 4, "height": 60, "width": 80}], "annotations": [], "categories": CLASSES}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
    for k, ann in enumerate(dt.loadAnns(dt.getAnnIds())):  # the exact masks, as pycocotools decodes them
        np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), det.masks[k])
