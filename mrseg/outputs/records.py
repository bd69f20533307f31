"""Detections -> JSON-ready records: the run journal lines and what every final file is built from.

A journal line (`OUT/.mrseg/records-<rank>.jsonl`, and each line of predictions.jsonl) is
`{"image": image_record(item, det), "instances": instance_records(det, classes, ...)}`, made by `record_line`.
"""

from __future__ import annotations

import json

import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.mask_crop import instance_crop
from mrseg.outputs.masks import DEFAULT_SIMPLIFY, mask_to_segmentation


def category_of(label: int, classes: list[dict]) -> dict:
    """The `{"id", "name"}` entry for a model label (1..K); raises ValueError for a label outside 1..K."""
    if not 1 <= label <= len(classes):
        raise ValueError(f"label {label} is outside 1..{len(classes)}, the model's class list")
    return classes[label - 1]


def instance_records(
    det: Detections,
    classes: list[dict],
    mask_format: str = "polygon",
    simplify: float = DEFAULT_SIMPLIFY,
) -> list[dict]:
    """One COCO-annotation-like dict per instance, in the detections' order.

    Keys: `bbox` [x, y, w, h] (rounded to 0.01), `area` (mask pixel count, else box area), `segmentation`
    (polygons or RLE, see `masks.mask_to_segmentation`; absent without masks), `score` (rounded to 1e-5),
    `category_id`, `label` (model label), `name`, and `track_id` when `det.track_ids` is set.
    `classes`: `{"id", "name"}` per label 1..K (`classes[label - 1]`).
    """
    records = []
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    for i in range(len(det)):
        label = int(det.labels[i])
        category = category_of(label, classes)
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        record = {
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(det.scores[i]), 5),
            "category_id": int(category["id"]),
            "label": label,
            "name": str(category["name"]),
        }
        if det.masks is not None:
            mask = instance_crop(det.masks, i, boxes[i])  # encoders work on the box's crop, not the image
            record["area"] = mask.area
            record["segmentation"] = mask_to_segmentation(mask, mask_format, simplify)
        else:
            record["area"] = round(max(x1 - x0, 0.0) * max(y1 - y0, 0.0), 2)
        if det.track_ids is not None:
            record["track_id"] = int(det.track_ids[i])
        records.append(record)
    return records


def image_record(item: InputItem, det: Detections) -> dict:
    """The `image` part of a journal line: id, file_name (`item.rel_path`), width, height[, video, frame]."""
    record = {"id": int(item.id), "file_name": item.rel_path}
    record.update(width=int(det.width), height=int(det.height))
    if item.frame is not None:
        record["video"] = item.video
        record["frame"] = int(item.frame)
    return record


def record_line(item: InputItem, det: Detections, instances: list[dict]) -> str:
    """One journal / predictions.jsonl line (newline-terminated JSON, image id first)."""
    return json.dumps({"image": image_record(item, det), "instances": instances}, ensure_ascii=False) + "\n"
