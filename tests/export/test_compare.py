"""mrseg.export.compare: what counts as the exported model matching PyTorch."""

import torch

from mrseg.export.compare import compare_detections


def detections(n=3, size=20):
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(n, 4, generator=g) * 5
    boxes[:, 2:] += 8
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        masks[i, 0, i : i + 10, 2:12] = True
    probs = torch.rand(n, 1, 28, 28, generator=g)
    scores, labels = torch.tensor([0.9, 0.7, 0.2])[:n], torch.tensor([1, 2, 1])[:n]
    return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks, "mask_probs": probs}


def test_identical_and_reordered_detections_match():
    ref = detections()
    c = compare_detections(ref, ref, score=0.5)
    assert c.ok and (c.reference, c.exported, c.matched) == (2, 2, 2) and c.max_box_diff == 0
    order = torch.tensor([2, 0, 1])
    shuffled = {k: v[order] for k, v in ref.items()}
    assert compare_detections(ref, shuffled, score=0.0).ok


def test_box_moved_beyond_tolerance_or_label_changed_fails():
    ref = detections()
    moved = {k: v.clone() for k, v in ref.items()}
    moved["boxes"][1, 0] += 0.02
    c = compare_detections(ref, moved, score=0.5)
    assert not c.ok and c.matched == 1
    moved["boxes"][1, 0] -= 0.015  # 0.005 px off: within 1e-2
    assert compare_detections(ref, moved, score=0.5).ok
    relabeled = dict(ref, labels=torch.tensor([1, 3, 1]))
    assert not compare_detections(ref, relabeled, score=0.5).ok


def test_extra_or_missing_detection_fails():
    ref = detections()
    extra = dict(ref, scores=torch.tensor([0.9, 0.7, 0.6]))
    c = compare_detections(ref, extra, score=0.5)
    assert not c.ok and c.exported == 3 and c.reference == 2
    # A score a hair below the threshold on the exported side is the same detection, not a missing one.
    at_threshold = dict(ref, scores=torch.tensor([0.9, 0.50003, 0.2]))
    borderline = dict(ref, scores=torch.tensor([0.9, 0.49995, 0.2]))
    assert compare_detections(at_threshold, borderline, score=0.5).ok


def test_scores_and_keypoints_need_their_tolerances():
    ref = detections()
    g = torch.Generator().manual_seed(1)
    ref["keypoints"] = torch.cat([torch.rand(3, 17, 2, generator=g) * 10, torch.ones(3, 17, 1)], dim=2)
    ref["keypoints_scores"] = torch.randn(3, 17, generator=g)
    assert compare_detections(ref, ref, score=0.5).ok
    for key, index, tol in (
        ("scores", (0,), 1e-4),
        ("keypoints", (1, 5, 0), 0.5),
        ("keypoints_scores", (0, 3), 1e-3),
    ):
        changed = {k: v.clone() for k, v in ref.items()}
        changed[key][index] += tol / 2  # within tolerance
        assert compare_detections(ref, changed, score=0.5).ok, key
        changed[key][index] += 1.5 * tol
        c = compare_detections(ref, changed, score=0.5)
        assert not c.ok and c.matched == 2, key
        diffs = {"scores": c.max_score_diff, "keypoints": c.max_keypoint_diff}
        got = diffs.get(key, c.max_keypoint_score_diff)
        assert abs(got - 2 * tol) < 1e-5, key


def test_masks_need_iou_unless_only_threshold_pixels_flipped():
    ref = detections()
    flipped = {k: v.clone() for k, v in ref.items()}
    flipped["masks"][0, 0, 10:13, 2:12] = True  # IoU 100 / 130
    flipped["mask_probs"][0] += 5e-5  # probabilities agree: the flips are threshold noise
    c = compare_detections(ref, flipped, score=0.5)
    assert c.min_mask_iou < 0.99 and c.ok
    flipped["mask_probs"][0] += 1e-2  # they do not: a real difference
    assert not compare_detections(ref, flipped, score=0.5).ok
