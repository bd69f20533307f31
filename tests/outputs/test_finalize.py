"""finalize: journals -> annotations.json / results.json / predictions.jsonl / yolo/data.yaml, read back by
pycocotools (the reference consumer)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrseg.outputs import finalize, read_records
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.masks import polygons_to_mask
from mrseg.outputs.records import instance_records, record_line


def _journals(tmp_path, make_dets, classes):
    """Two rank files with interleaved ids, a duplicate id (a redone input) and a torn last line."""
    rank0, rank1 = tmp_path / ".mrseg" / "records-0.jsonl", tmp_path / ".mrseg" / "records-1.jsonl"
    rank0.parent.mkdir(parents=True)
    det, tracked = make_dets(), make_dets(track=True)
    lines = {0: [], 1: []}
    for image_id in (1, 2, 3, 4, 5):
        if image_id == 4:  # a video frame
            item = InputItem(id=4, path="v.mp4", rel_path="v/000002.jpg", frame=2, video="v.mp4", fps=10.0)
            d = tracked
        else:
            item, d = InputItem(id=image_id, path=f"{image_id}.jpg", rel_path=f"dir/{image_id}.jpg"), det
        instances = instance_records(d, classes) if image_id != 3 else []
        lines[image_id % 2].append(record_line(item, d, instances))
    rank0.write_text(lines[0][1] + lines[0][0] + lines[0][1], encoding="utf-8")  # 4, 2, 4 again
    rank1.write_text("".join(lines[1]) + lines[1][0][:25], encoding="utf-8")  # 1, 3, 5, torn
    return [rank0, rank1]


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def test_all_formats_read_back(tmp_path, make_dets, classes, iou):
    journals = _journals(tmp_path, make_dets, classes)
    formats = ["coco", "coco-results", "jsonl", "yolo", "labelme", "overlay"]
    written = finalize(tmp_path, formats, journals, classes)
    assert set(written) == {"coco", "coco-results", "jsonl", "yolo"}

    # predictions.jsonl: merged, sorted, deduped, torn line dropped.
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["image"]["id"] for x in lines] == [1, 2, 3, 4, 5]
    for inst in json.loads(lines[0])["instances"]:  # the exact RLE, no journal-only polygons
        assert "polygons" not in inst and isinstance(inst["segmentation"], dict)

    with _quiet():
        gt = COCO(str(tmp_path / "annotations.json"))
    assert sorted(gt.getImgIds()) == [1, 2, 3, 4, 5]
    assert gt.imgs[4]["video"] == "v.mp4" and gt.imgs[4]["frame"] == 2
    assert gt.imgs[2]["file_name"] == "dir/2.jpg" and gt.imgs[2]["width"] == 80
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) == 12 and [a["id"] for a in anns] == list(range(1, 13))
    assert all(a["iscrowd"] == 0 and "score" in a for a in anns)
    assert [a["track_id"] for a in anns if a["image_id"] == 4] == [5, 6, 7]
    assert {c["id"]: c["name"] for c in gt.dataset["categories"]} == {1: "date", 3: "fig", 7: "hazel nut"}
    det = make_dets()
    for a in gt.loadAnns(gt.getAnnIds(imgIds=[1])):
        k = [1, 3, 7].index(a["category_id"])
        assert iou(gt.annToMask(a), det.masks[k]) >= 0.95

    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 12 and all(isinstance(r["segmentation"], dict) for r in results)
    with _quiet():
        dt = gt.loadRes(str(tmp_path / "results.json"))
    for a in dt.loadAnns(dt.getAnnIds(imgIds=[1])):  # results.json is exact: pycocotools decodes the masks
        k = [1, 3, 7].index(a["category_id"])
        np.testing.assert_array_equal(dt.annToMask(a).astype(bool), det.masks[k])
        assert dt.loadCats(a["category_id"])[0]["name"] == classes[k]["name"]
    with _quiet():
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0)  # the same instances as the GT: perfect AP

    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "date", 1: "fig", 2: "hazel nut"} and data["nc"] == 3
    assert data["train"] == data["val"] == "images" and "path" not in data
    assert (tmp_path / "yolo" / "images").is_dir()

    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []


def test_read_records_dedupes_last_wins(tmp_path, detections):
    f = tmp_path / "r.jsonl"
    a = record_line(InputItem(id=2, path="a", rel_path="old.jpg"), detections, [])
    b = record_line(InputItem(id=1, path="b", rel_path="b.jpg"), detections, [])
    c = record_line(InputItem(id=2, path="a", rel_path="new.jpg"), detections, [])
    f.write_text(a + b + "{not json}\n" + c)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        recs = list(read_records([f, tmp_path / "missing-rank.jsonl"]))
    assert [(r["image"]["id"], r["image"]["file_name"]) for r in recs] == [(1, "b.jpg"), (2, "new.jpg")]


def test_empty_run(tmp_path, classes):
    finalize(tmp_path, ["coco", "coco-results", "jsonl"], [tmp_path / "none.jsonl"], classes)
    with _quiet():
        gt = COCO(str(tmp_path / "annotations.json"))
    assert gt.getImgIds() == [] and len(gt.dataset["categories"]) == 3
    assert json.loads((tmp_path / "results.json").read_text()) == []
    assert (tmp_path / "predictions.jsonl").read_text() == ""


def test_placeholder_categories_never_listed(tmp_path):
    cats = [{"id": 13, "name": "stop sign"}, {"id": 12, "name": "N/A"}, {"id": 1, "name": "person"}]
    finalize(tmp_path, ["coco", "yolo"], [], cats)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "person"), (13, "stop sign")]
    text = (tmp_path / "yolo" / "data.yaml").read_text()
    assert yaml.safe_load(text)["names"] == {0: "person", 1: "stop sign"}  # real categories, sorted by id
    assert '1: "stop sign"  # category_id 13' in text  # the documented index -> category id mapping


def test_real_nuts_instances_evaluate_near_perfect(tmp_path, nuts):
    """The nuts GT masks written through records + finalize and scored against the GT by COCOeval."""
    classes = [{"id": c["id"], "name": c["name"]} for c in nuts["categories"]]
    label_of = {c["id"]: k + 1 for k, c in enumerate(classes)}
    journal = tmp_path / "records-0.jsonl"
    with open(journal, "w", encoding="utf-8") as f:
        for im in nuts["images"]:
            anns = [a for a in nuts["annotations"] if a["image_id"] == im["id"]]
            h, w = im["height"], im["width"]
            boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)])
            boxes = boxes.reshape(-1, 4).astype(np.float32)
            det = Detections(
                width=w, height=h, boxes=boxes, scores=np.ones(len(anns), np.float32),
                labels=np.array([label_of[a["category_id"]] for a in anns], np.int64),
                masks=np.stack([polygons_to_mask(a["segmentation"], h, w) for a in anns]),
            )  # fmt: skip
            item = InputItem(id=im["id"], path=im["file_name"], rel_path=im["file_name"])
            f.write(record_line(item, det, instance_records(det, classes)))
    finalize(tmp_path, ["coco-results"], [journal], classes)
    gt_path = str(Path(__file__).resolve().parents[1] / "assets" / "nuts" / "trainval.json")
    with _quiet():
        gt = COCO(gt_path)
        dt = gt.loadRes(str(tmp_path / "results.json"))
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] >= 0.95  # mask AP of our polygons against the originals
