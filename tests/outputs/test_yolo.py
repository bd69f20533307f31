"""YoloWriter: YOLO-seg label files parse back to polygons that cover the masks."""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.records import instance_records
from mrseg.outputs.yolo import YoloWriter, yolo_lines
from tests.outputs.conftest import iou
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


def test_empty_image_gives_empty_file(tmp_path, classes):
    YoloWriter(tmp_path).write(InputItem(id=1, path="e.jpg", rel_path="e.jpg"), None, Detections(9, 9), [])
    assert (tmp_path / "yolo" / "labels" / "e.txt").read_text() == ""


def _line(mask: np.ndarray) -> tuple[str, int]:
    """The YOLO-seg line our writer gives an instance with this mask, and how many parts it left out."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    det = Detections(
        width=w,
        height=h,
        boxes=np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32),
        scores=np.array([0.9], np.float32),
        labels=np.array([1], np.int64),
        masks=mask[None],
    )
    stats: dict = {}
    lines = yolo_lines(det, instance_records(det, [{"id": 1, "name": "thing"}]), stats=stats)
    assert len(lines) == 1 and len(lines[0].split()) >= 7  # class + at least 3 points: a segment
    return lines[0], stats.get("parts_left_out", 0)


def test_parts_cost_only_their_bridges_pixels():
    """Two parts 7 px apart, in one ring: ultralytics draws both exactly, plus the 7 px of the bridge."""
    mask = np.zeros((40, 60), bool)
    mask[5:25, 5:20] = True
    mask[10:30, 27:45] = True
    drawn = yolo_mask(_line(mask)[0], *mask.shape)
    assert not (mask & ~drawn).any()
    assert (drawn & ~mask).sum() == 7


def test_holes_of_every_size_stay_empty():
    """Holes of 1, 2, 3 and 25 px, two holes 1 px apart, a hole by the edge: each is cut by a bridge through
    the mask, which fillPoly's even-odd fill leaves empty: ultralytics draws exactly the mask."""
    mask = np.zeros((40, 60), bool)
    mask[2:38, 2:58] = True
    mask[6, 6] = False
    mask[6, 10:12] = False
    mask[10, 6], mask[11, 6:8] = False, False
    mask[15:20, 15:20] = False
    mask[25:28, 20:23] = False
    mask[25:28, 24:27] = False
    mask[30:34, 3] = False
    drawn = yolo_mask(_line(mask)[0], *mask.shape)
    assert np.array_equal(drawn, mask)


def test_an_island_in_a_hole_is_drawn_and_the_hole_stays_empty():
    mask = np.zeros((50, 50), np.uint8)
    cv2.circle(mask, (25, 25), 20, 1, -1)
    cv2.circle(mask, (25, 25), 12, 0, -1)
    cv2.circle(mask, (25, 25), 4, 1, -1)
    mask = mask.astype(bool)
    drawn = yolo_mask(_line(mask)[0], *mask.shape)
    assert not (mask & ~drawn).any()
    assert 0 < (drawn & ~mask).sum() <= 9  # the bridge across the hole (8 px gap, a diagonal may round up)


def test_a_far_speck_is_left_out_when_its_bridge_costs_more_than_it_brings():
    """A blob and a 1-px speck 60 px away: the bridge to the speck would draw ~60 wrong pixels for 1 right
    one, so the ring leaves the speck out (and counts it); a speck 6 px from the blob is kept."""
    for speck_x, kept in ((90, False), (33, True)):
        mask = np.zeros((60, 100), np.uint8)
        cv2.circle(mask, (15, 30), 12, 1, -1)
        blob = mask.astype(bool)
        mask = blob.copy()
        mask[30, speck_x] = True
        line, left_out = _line(mask)
        drawn = yolo_mask(line, *mask.shape)
        assert left_out == (0 if kept else 1)
        if kept:
            assert drawn[30, speck_x] and not (mask & ~drawn).any()
        else:
            assert np.array_equal(drawn, blob)


def test_the_parts_kept_are_the_best_choice_for_ultralytics():
    """Random masks of 2-5 scattered parts: what ultralytics draws from our line has an IoU with the mask
    within 0.02 of the best over every subset of the parts written alone (each through ultralytics too), and
    at least the share of the largest part (what writing only that part would give)."""
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 30:
        mask = np.zeros((32, 48), np.uint8)
        for _ in range(rng.integers(2, 6)):
            x, y = rng.integers(0, 44), rng.integers(0, 28)
            mask[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count < 3:
            continue
        checked += 1
        mask = mask.astype(bool)
        ours = iou(yolo_mask(_line(mask)[0], *mask.shape), mask)
        best = max(
            iou(yolo_mask(_line(np.isin(labels, subset))[0], *mask.shape), mask)
            for r in range(1, count)
            for subset in itertools.combinations(range(1, count), r)
        )
        assert ours >= best - 0.02, (ours, best)
        assert ours >= stats[1:, cv2.CC_STAT_AREA].max() / mask.sum() - 1e-9
