"""benchmarks/predict_parity.py: the matching, the COCO box AP and the autocast verdict that the GPU session's
benchmark reports rest on (checked on small synthetic detections; pycocotools is the reference for AP)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import predict_parity as pp  # noqa: E402

pytest.importorskip("pycocotools", reason="the box AP comes from pycocotools")


def detections(n: int, seed: int = 0):
    """n boxes xyxy in a 400x300 image, distinct scores, labels 1..3, their filled-box masks [n, 300, 400]."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 250, size=(n, 2))
    wh = rng.uniform(20, 120, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).clip(0, [399, 299, 399, 299])
    scores = np.sort(rng.uniform(0.05, 1.0, size=n))[::-1]
    labels = rng.integers(1, 4, size=n)
    masks = np.zeros((n, 300, 400), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().astype(int)):
        masks[k, y0:y1, x0:x1] = True
    return boxes, scores, labels, masks


def add(parity, ref, ours):
    parity.add(*ref[:3], *ours[:3], lambda i, j: pp.mask_iou(ours[3][j], ref[3][i]))


def test_identical_detections_keep_everything_with_ap_one():
    ref = detections(30)
    parity = pp.AutocastParity()
    add(parity, ref, ref)
    ok, ap, ap50 = parity.verdict()
    assert ok and parity.matched == parity.reference == 30
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)
    assert "KEEPS DETECTIONS" in parity.line()


def test_shuffled_order_and_small_score_noise_still_match():
    boxes, scores, labels, masks = detections(25, seed=1)
    order = np.random.default_rng(2).permutation(25)
    ours = (boxes[order] + 0.3, scores[order] * 0.999, labels[order], masks[order])
    parity = pp.AutocastParity()
    add(parity, (boxes, scores, labels, masks), ours)
    assert parity.matched == 25
    assert min(parity.ious) == pytest.approx(1.0)
    assert parity.verdict()[0]


def test_a_moved_box_and_a_wrong_label_are_unmatched_and_lower_the_ap():
    ref = detections(20, seed=3)
    boxes, scores, labels, masks = (a.copy() for a in ref)
    boxes[0] += 40.0  # IoU well under 0.9 with its reference
    labels[1] = labels[1] % 3 + 1  # another class
    parity = pp.AutocastParity()
    add(parity, ref, (boxes, scores, labels, masks))
    ok, ap, _ = parity.verdict()
    assert not ok
    assert parity.matched == 18
    assert ap < 0.99
    assert "CHANGES DETECTIONS" in parity.line()


def test_mask_iou_below_threshold_fails_the_verdict():
    ref = detections(10, seed=4)
    masks = ref[3].copy()
    masks[0] = False  # same box, empty mask: IoU 0
    parity = pp.AutocastParity()
    add(parity, ref, (*ref[:3], masks))
    assert parity.matched == 10 and min(parity.ious) == 0.0
    assert not parity.verdict()[0]


def test_match_is_one_to_one_and_prefers_high_scores():
    ref_boxes = np.array([[0, 0, 100, 100], [1, 1, 101, 101]], dtype=float)
    ours = np.array([[0, 0, 100, 100]], dtype=float)
    pairs = pp.match_detections(ref_boxes, [0.4, 0.9], [1, 1], ours, [1])
    assert pairs == [(1, 0)]  # the higher-scoring reference detection takes the only candidate


def test_box_iou_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    a, b = detections(7, seed=5)[0], detections(9, seed=6)[0]
    expected = box_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(pp.box_iou(a, b), expected, rtol=1e-9, atol=1e-12)


def test_strict_pairing_counts_near_tie_swaps():
    boxes, scores, labels, _ = detections(6, seed=7)
    scores = scores.copy()
    scores[3] = scores[2] - 1e-5  # a near tie that may come out in either order
    swapped = [0, 1, 3, 2, 4, 5]
    ours = (scores[swapped], labels[swapped], boxes[swapped])
    pairing, swaps = pp.pair_detections(scores, labels, boxes, *ours)
    assert pairing == swapped and swaps == 2
    assert pp.pair_detections(scores, labels, boxes, scores[:5], labels[:5], boxes[:5])[0] is None


def write_annotations(path, file_name, boxes, scores, labels, masks):
    """A COCO annotations.json of one image, as `mrseg predict` and the torchvision loop write it."""
    from pycocotools import mask as mask_util

    anns = []
    for k, (box, score, label, m) in enumerate(zip(boxes, scores, labels, masks, strict=True)):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "id": k + 1,
                "image_id": 7,
                "category_id": int(label),
                "bbox": [round(float(box[0]), 2), round(float(box[1]), 2)]
                + [round(float(box[2] - box[0]), 2), round(float(box[3] - box[1]), 2)],
                "score": round(float(score), 5),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
            }
        )
    images = [{"id": 7, "file_name": file_name, "width": 400, "height": 300}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))


def test_annotation_files_same_then_changed(tmp_path):
    boxes, scores, labels, masks = detections(15, seed=8)
    ref, ours = tmp_path / "tv.json", tmp_path / "ours.json"
    write_annotations(ref, "a.jpg", boxes, scores, labels, masks)
    write_annotations(ours, "a.jpg", boxes, scores, labels, masks)
    assert pp.compare_annotation_files(ours, ref).ok
    same = pp.compare_annotation_files_autocast(ours, ref)
    assert same.verdict()[0] and same.matched == 15 and min(same.ious) == pytest.approx(1.0)

    masks = masks.copy()
    masks[3, :, :] = False  # one mask lost
    write_annotations(ours, "a.jpg", boxes[:-1], scores[:-1], labels[:-1], masks[:-1])  # and one detection
    assert not pp.compare_annotation_files(ours, ref).ok
    changed = pp.compare_annotation_files_autocast(ours, ref)
    assert changed.matched == 14 and min(changed.ious) == 0.0
    assert not changed.verdict()[0]
