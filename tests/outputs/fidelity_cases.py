"""Masks for the polygon round-trip checks: real object masks (nuts, COCO val2014 sample) and the hard cases a
model produces (1-px strips, 1-4 px parts, fragments, holes, masks on the image border).

Also `round_trip`: one mask through our three polygon writers and back through each consumer's rasteriser.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tests.outputs.consumers import coco_mask, labelme_mask, yolo_mask

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CONSUMERS = ("coco", "labelme", "yolo")


def real_masks(name: str, limit: int | None = None, stride: int = 1):
    """`(mask bool [H, W], tag)` for the non-crowd annotations of `nuts` or `val2014` (pycocotools' masks)."""
    rel = "nuts/trainval.json" if name == "nuts" else "cocoapi-val2014-100/instances_val2014_100.json"
    path = ASSETS / rel
    data = json.loads(path.read_text())
    images = {im["id"]: im for im in data["images"]}
    anns = [a for a in data["annotations"] if not a.get("iscrowd")][::stride][:limit]
    for ann in anns:
        im = images[ann["image_id"]]
        yield coco_mask(ann["segmentation"], im["height"], im["width"]), f"{name}:{ann['id']}"


def synthetic_masks(seed: int = 0):
    """`(mask, tag)`: thin strips, tiny parts, fragmented, holed and border-touching masks."""
    rng = np.random.default_rng(seed)
    h, w = 64, 96

    def blank():
        return np.zeros((h, w), np.uint8)

    m = blank()
    m[20, 5:90] = 1
    yield m.astype(bool), "strip-1px-horizontal"
    m = blank()
    m[3:60, 40] = 1
    yield m.astype(bool), "strip-1px-vertical"
    m = blank()
    for k in range(50):
        m[5 + k, 10 + k] = 1
    yield m.astype(bool), "strip-1px-diagonal"
    m = blank()
    cv2.line(m, (5, 60), (90, 8), 1, 1)
    yield m.astype(bool), "strip-1px-slanted"
    m = blank()
    m[30:32, 2:94] = 1
    yield m.astype(bool), "strip-2px"
    for size in (1, 2, 3, 4):
        m = blank()
        m[10 : 10 + (size + 1) // 2, 20 : 20 + (2 if size >= 2 else 1) - (size == 3)] = 1
        m[10 + (size == 3), 22 - (size == 3)] = size >= 3
        yield m.astype(bool), f"tiny-{int(m.sum())}px"
    m = blank()
    cv2.circle(m, (30, 30), 14, 1, -1)
    for k, (y, x) in enumerate([(5, 70), (12, 80), (40, 75), (55, 60), (58, 88), (20, 60)]):
        m[y : y + 1 + k % 2, x : x + 1 + (k // 2) % 2] = 1  # parts of 1, 2 and 4 px
    yield m.astype(bool), "blob-with-1-4px-parts"
    for k in range(4):
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5 + k)
        m = (noise > np.quantile(noise, 0.8 - 0.1 * k)).astype(np.uint8)
        yield m.astype(bool), f"fragmented-{k}"
    m = blank()
    cv2.circle(m, (48, 32), 26, 1, -1)
    cv2.circle(m, (40, 30), 7, 0, -1)
    cv2.rectangle(m, (55, 35), (60, 38), 0, -1)
    m[20, 50] = 0  # a 1-px hole
    yield m.astype(bool), "holes"
    m = blank()
    cv2.ellipse(m, (48, 32), (40, 25), 0, 0, 360, 1, 3)
    yield m.astype(bool), "ring-3px"
    m = blank()
    cv2.circle(m, (0, 0), 20, 1, -1)
    cv2.rectangle(m, (80, 10), (95, 63), 1, -1)
    m[63, 30:60] = 1
    yield m.astype(bool), "border-touching"
    full = np.ones((h, w), bool)
    yield full, "whole-image"
    for k in range(4):  # smooth blobs with ragged edges, as a mask head's pasted output looks
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 4)
        yield noise > np.quantile(noise, 0.6), f"model-like-{k}"


def round_trip(mask: np.ndarray, simplify: float | None = None) -> dict[str, np.ndarray]:
    """What each consumer reads back from the files our writers make for one instance with this mask."""
    from mrseg.outputs.detections import Detections, InputItem
    from mrseg.outputs.labelme import labelme_document
    from mrseg.outputs.records import instance_records
    from mrseg.outputs.yolo import yolo_lines

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 1, 1]
    det = Detections(
        width=w,
        height=h,
        boxes=np.array([box], np.float32),
        scores=np.array([0.9], np.float32),
        labels=np.array([1], np.int64),
        masks=mask[None],
    )
    kw = {} if simplify is None else {"simplify": simplify}
    instances = instance_records(det, [{"id": 1, "name": "thing"}], "polygon", **kw)
    item = InputItem(id=1, path="x.jpg", rel_path="x.jpg")
    shapes = labelme_document(item, det, instances, "x.jpg", **kw)["shapes"]
    lines = yolo_lines(det, instances, **kw)
    back = {
        "coco": coco_mask(instances[0]["segmentation"], h, w),
        "labelme": labelme_mask(shapes, h, w),
        "yolo": yolo_mask(lines[0], h, w) if lines else np.zeros((h, w), bool),
    }
    back["_instances"], back["_shapes"], back["_lines"] = instances, shapes, lines
    return back


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))
