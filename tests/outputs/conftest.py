"""Shared fixtures for the output-format tests: small synthetic detections with real-shaped masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mrseg.outputs.detections import Detections

CLASSES = [{"id": 1, "name": "date"}, {"id": 3, "name": "fig"}, {"id": 7, "name": "hazel nut"}]
NUTS = Path(__file__).resolve().parents[1] / "assets" / "nuts"


def make_detections(h: int = 60, w: int = 80, track: bool = False) -> Detections:
    """Three instances: a disk (label 1), a two-part object (label 2), a ring with a hole (label 3)."""
    masks = np.zeros((3, h, w), np.uint8)
    cv2.circle(masks[0], (20, 20), 12, 1, -1)
    cv2.rectangle(masks[1], (45, 5), (60, 20), 1, -1)
    cv2.rectangle(masks[1], (66, 30), (76, 50), 1, -1)
    cv2.circle(masks[2], (25, 45), 12, 1, -1)
    cv2.circle(masks[2], (25, 45), 5, 0, -1)
    masks = masks.astype(bool)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Detections(
        width=w,
        height=h,
        boxes=np.array(boxes, np.float32) + np.float32(0.123),
        scores=np.array([0.9, 0.75, 0.612345], np.float32),
        labels=np.array([1, 2, 3], np.int64),
        masks=masks,
        track_ids=np.array([5, 6, 7], np.int64) if track else None,
    )


@pytest.fixture
def classes():
    return [dict(c) for c in CLASSES]


@pytest.fixture
def detections():
    return make_detections()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def make_dets():
    return make_detections


@pytest.fixture(name="iou")
def iou_fixture():
    return iou


@pytest.fixture
def nuts():
    """The nuts COCO json (real polygons) from tests/assets (see tests/assets/PROVENANCE.md)."""
    import json

    ann = NUTS / "trainval.json"
    return json.loads(ann.read_text())
