"""Detections -> JSON-ready records: the run journal lines and what every final file is built from.

A journal line (`OUT/.mrseg/records-<rank>.jsonl`, and each line of predictions.jsonl) is `record_line`'s
`{"image": image_record(item, det), "instances": instance_records(det, classes, ...)}`. An instance's
`segmentation` is always the exact compressed RLE of the model's pasted mask. Polygons, an approximation for
annotations.json under `--mask-format polygon`, are held in the journal only (`polygons`); `public_line`
drops them from predictions.jsonl and `--out -`.
"""

from __future__ import annotations

import json

import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.mask_crop import instance_crop
from mrseg.outputs.masks import DEFAULT_SIMPLIFY, mask_to_segmentation, rle_encode, segmentation_to_rle

JOURNAL_ONLY_KEYS = ("polygons",)
"""Instance keys kept in the run journal for annotations.json but left out of predictions.jsonl."""


def instance_records(
    det: Detections, classes: list[dict], mask_format: str = "polygon", simplify: float = DEFAULT_SIMPLIFY
) -> list[dict]:
    """One COCO-annotation-like dict per instance, in the detections' order.

    Keys: `bbox` [x, y, w, h] (rounded to 0.01), `area` (mask pixel count, else box area), `segmentation`
    (compressed RLE of the mask, exact; absent without masks), `score` (rounded to 1e-5), `category_id`,
    `label` (model label), `name`, `track_id` when `det.track_ids` is set. With `det.keypoints`: `keypoints`
    as COCO has them (`keypoint_fields`), `num_keypoints` and `keypoint_scores`. With `mask_format="polygon"`
    also `polygons`, the COCO polygons (`masks.mask_to_segmentation`, simplified by `simplify` px) that
    annotations.json uses instead of the RLE; absent where that falls back to RLE (holes, tiny masks).
    `classes`: `{"id", "name"}` per label 1..K.
    """
    if mask_format not in ("polygon", "rle"):
        raise ValueError(f"mask_format must be 'polygon' or 'rle', got {mask_format!r}")
    records = []
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    for i in range(len(det)):
        label = int(det.labels[i])
        if not 1 <= label <= len(classes):
            raise ValueError(f"label {label} is outside 1..{len(classes)}, the model's class list")
        category = classes[label - 1]
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
            record["segmentation"] = rle_encode(mask)
            if mask_format == "polygon":
                polygons = mask_to_segmentation(mask, "polygon", simplify)
                if isinstance(polygons, list):
                    record["polygons"] = polygons
        else:
            record["area"] = round(max(x1 - x0, 0.0) * max(y1 - y0, 0.0), 2)
        if det.keypoints is not None:
            record.update(keypoint_fields(det.keypoints[i], det.keypoint_scores[i]))
        if det.track_ids is not None:
            record["track_id"] = int(det.track_ids[i])
        records.append(record)
    return records


def keypoint_fields(keypoints: np.ndarray, scores: np.ndarray | None) -> dict:
    """`keypoints` (COCO's flat [x, y, v] x K: x, y rounded to 0.01, v = 2 for a predicted keypoint, else
    0, 0, 0), `num_keypoints` and `keypoint_scores` (rounded to 1e-5) of one instance from the model's
    keypoints [K, 3] (visibility > 0 when predicted) and keypoint scores [K]."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 3)
    flat: list[float | int] = []
    for x, y, v in points:
        flat += [round(float(x), 2), round(float(y), 2), 2] if v > 0 else [0, 0, 0]
    out = {"keypoints": flat, "num_keypoints": int((points[:, 2] > 0).sum())}
    if scores is not None:
        out["keypoint_scores"] = [round(float(s), 5) for s in np.asarray(scores).reshape(-1)]
    return out


def coco_results(
    image_id: int, instances: list[dict], height: int, width: int, category_ids: dict[int, int] | None = None
) -> list[dict]:
    """One image's COCO results (for `COCO.loadRes`) from its instance records: `image_id`, `category_id`,
    `bbox`, `score` (the box's; pycocotools ranks keypoints by it too) and where present `segmentation`
    (compressed RLE; older journals' polygons rasterised at `height` x `width`) and `keypoints`.
    `category_ids`: model label -> category id to write instead (a ground truth's); instances whose label it
    lacks are left out."""
    results = []
    for inst in instances:
        if category_ids is not None and inst["label"] not in category_ids:
            continue
        category_id = inst["category_id"] if category_ids is None else category_ids[inst["label"]]
        res = {"image_id": image_id, "category_id": category_id, "bbox": inst["bbox"], "score": inst["score"]}
        if "segmentation" in inst:
            res["segmentation"] = segmentation_to_rle(inst["segmentation"], height, width)
        if "keypoints" in inst:
            res["keypoints"] = inst["keypoints"]
        results.append(res)
    return results


def image_record(item: InputItem, det: Detections) -> dict:
    """The `image` part of a journal line: id, file_name (`item.rel_path`), width, height[, video, frame]."""
    record = {"id": int(item.id), "file_name": item.rel_path}
    record.update(width=int(det.width), height=int(det.height))
    if item.frame is not None:
        record["video"] = item.video
        record["frame"] = int(item.frame)
    return record


def record_line(item: InputItem, det: Detections, instances: list[dict]) -> str:
    """One journal line (newline-terminated JSON, image id first); `public_line` of it is the jsonl line."""
    return json.dumps({"image": image_record(item, det), "instances": instances}, ensure_ascii=False) + "\n"


def public_instances(instances: list[dict]) -> list[dict]:
    """The instances without the journal-only keys (`JOURNAL_ONLY_KEYS`)."""
    return [{k: v for k, v in inst.items() if k not in JOURNAL_ONLY_KEYS} for inst in instances]


def public_line(line: bytes) -> bytes:
    """A journal line as predictions.jsonl has it: without the journal-only keys (as is when it has none)."""
    if not any(f'"{k}"'.encode() in line for k in JOURNAL_ONLY_KEYS):
        return line
    record = json.loads(line)
    record["instances"] = public_instances(record["instances"])
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
