"""Track ids on synthetic moving objects: stable while an object moves, new for new objects, class-aware."""

import numpy as np
import pytest

from mrseg.engine.predict.tracker import Tracker, box_iou, mask_iou


def _box(cx, cy, size=20):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def _mask(box, h=120, w=160):
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def test_box_iou_matches_hand_computed_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 4, 4]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 0 and iou[1, 1] == 0
    assert iou[1, 0] == 0  # [0,4] and [5,15] don't touch


def test_mask_iou_matches_box_iou_for_rectangles():
    boxes = np.array([_box(40, 40), _box(48, 44), _box(100, 90)], np.float32)
    masks = np.stack([_mask(b) for b in boxes])
    np.testing.assert_allclose(mask_iou(masks, masks), box_iou(boxes, boxes), atol=1e-6)


@pytest.mark.parametrize("use_masks", [False, True])
def test_moving_objects_keep_their_ids_and_new_ones_get_new_ids(use_masks):
    tracker = Tracker(use_masks=use_masks)
    history = []
    for t in range(10):
        # Object A moves right, B moves down (both 3 px/frame on 20 px boxes: IoU ~0.74 frame to frame);
        # C (another class) appears at frame 5 right on top of A's path.
        boxes = [_box(20 + 3 * t, 30), _box(100, 10 + 3 * t)]
        labels = [1, 2]
        if t >= 5:
            boxes.append(_box(20 + 3 * t, 30))
            labels.append(3)
        order = np.random.default_rng(t).permutation(len(boxes))  # detector order is arbitrary
        b = np.array(boxes, np.float32)[order]
        lab = np.array(labels)[order]
        m = np.stack([_mask(x) for x in b]) if use_masks else None
        ids = tracker.update(b, lab, m)
        history.append(dict(zip(lab.tolist(), ids.tolist(), strict=True)))
    assert all(h[1] == history[0][1] for h in history)
    assert all(h[2] == history[0][2] for h in history)
    assert history[0][1] != history[0][2]
    c_ids = {h[3] for h in history[5:]}
    assert len(c_ids) == 1 and c_ids.isdisjoint({history[0][1], history[0][2]})


def test_jump_beyond_threshold_starts_a_new_track_and_ids_are_never_reused():
    tracker = Tracker(iou_threshold=0.3, max_age=0)
    first = tracker.update(np.array([_box(20, 20)], np.float32), np.array([1]))
    far = tracker.update(np.array([_box(120, 90)], np.float32), np.array([1]))
    back = tracker.update(np.array([_box(20, 20)], np.float32), np.array([1]))
    assert len({first[0], far[0], back[0]}) == 3


def test_a_missed_frame_within_max_age_keeps_the_id():
    tracker = Tracker(max_age=1)
    a = tracker.update(np.array([_box(20, 20)], np.float32), np.array([1]))
    tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    again = tracker.update(np.array([_box(22, 20)], np.float32), np.array([1]))
    assert again[0] == a[0]


def test_two_candidates_are_matched_one_to_one_by_best_total_iou():
    tracker = Tracker()
    ids = tracker.update(np.array([_box(20, 20), _box(34, 20)], np.float32), np.array([1, 1]))
    # Both new boxes overlap both old ones; the assignment must keep each with its nearest predecessor.
    new = tracker.update(np.array([_box(37, 20), _box(23, 20)], np.float32), np.array([1, 1]))
    assert new[1] == ids[0] and new[0] == ids[1]


def test_seed_continues_numbering_and_matching_after_resume():
    tracker = Tracker()
    tracker.seed(np.array([_box(20, 20)], np.float32), np.array([1]), np.array([7]))
    ids = tracker.update(np.array([_box(22, 20), _box(90, 90)], np.float32), np.array([1, 1]))
    assert ids[0] == 7 and ids[1] == 8
