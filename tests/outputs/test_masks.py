"""Masks <-> polygons and RLE, checked by rasterising with pycocotools (the reference consumer)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from mrseg.outputs.mask_crop import MaskCrop
from mrseg.outputs.masks import (
    has_holes,
    hole_areas,
    mask_to_polygons,
    mask_to_segmentation,
    polygons_to_mask,
    rle_counts,
    rle_decode,
    rle_encode,
    segmentation_to_rle,
)


def test_real_object_polygons_round_trip(nuts, iou):
    """Each nuts instance: GT polygon -> mask -> our polygons -> mask keeps IoU >= 0.95 (1.0 unsimplified)."""
    images = {im["id"]: im for im in nuts["images"]}
    ious, exact = [], []
    for ann in nuts["annotations"]:
        im = images[ann["image_id"]]
        mask = polygons_to_mask(ann["segmentation"], im["height"], im["width"])
        assert mask.sum() > 100
        ious.append(iou(mask, polygons_to_mask(mask_to_polygons(mask), im["height"], im["width"])))
        if len(exact) < 20:
            unsimplified = mask_to_polygons(mask, simplify=0)
            exact.append(iou(mask, polygons_to_mask(unsimplified, im["height"], im["width"])))
    assert len(ious) == 165
    assert min(ious) >= 0.95, min(ious)
    assert np.mean(ious) >= 0.98
    assert min(exact) == 1.0  # the pixel-edge construction is exact before simplification


def test_simplify_reduces_vertices(nuts):
    im = nuts["images"][0]
    ann = next(a for a in nuts["annotations"] if a["image_id"] == im["id"])
    mask = polygons_to_mask(ann["segmentation"], im["height"], im["width"])
    n = [sum(len(p) for p in mask_to_polygons(mask, simplify=s)) for s in (0, 0.5, 1.0, 3.0)]
    assert n[0] > n[1] > n[2] > n[3]


def test_multi_part_keeps_every_part(iou):
    mask = np.zeros((50, 70), np.uint8)
    cv2.circle(mask, (12, 12), 9, 1, -1)
    cv2.rectangle(mask, (30, 5), (45, 40), 1, -1)
    cv2.ellipse(mask, (58, 38), (8, 5), 30, 0, 360, 1, -1)
    polys = mask_to_polygons(mask.astype(bool))
    assert len(polys) == 3
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    assert iou(mask, polygons_to_mask(polys, 50, 70)) >= 0.95
    seg = mask_to_segmentation(mask.astype(bool), "polygon")
    assert isinstance(seg, list) and len(seg) == 3


def test_holed_mask_falls_back_to_exact_rle(iou):
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 15, 1, -1)
    cv2.circle(mask, (20, 20), 6, 0, -1)
    mask = mask.astype(bool)
    assert has_holes(mask)
    seg = mask_to_segmentation(mask, "polygon")
    assert isinstance(seg, dict) and isinstance(seg["counts"], str)
    np.testing.assert_array_equal(rle_decode(seg), mask)
    # Polygon-only consumers get the outer boundary (hole filled).
    filled = np.zeros((40, 40), np.uint8)
    cv2.circle(filled, (20, 20), 15, 1, -1)
    assert iou(filled, polygons_to_mask(mask_to_polygons(mask), 40, 40)) >= 0.95


def test_tiny_hole_is_ignored_and_hole_areas_counted():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True
    mask[10, 10] = False  # 1-px hole
    mask[15:18, 15:18] = False  # 9-px hole
    assert sorted(hole_areas(mask)) == [1, 9]
    assert has_holes(mask, min_area=4) and not has_holes(mask, min_area=10)
    mask[15:18, 15:18] = True
    assert isinstance(mask_to_segmentation(mask, "polygon"), list)


def test_slivers_and_tiny_masks_are_kept_as_polygons():
    """Every part is kept, however small: pycocotools draws the 2-px sliver and the tiny mask back."""
    mask = np.zeros((30, 30), bool)
    mask[5:20, 5:20] = True
    mask[25, 25:27] = True  # a 2-px sliver
    polys = mask_to_polygons(mask)
    assert len(polys) == 2
    np.testing.assert_array_equal(polygons_to_mask(polys[1:], 30, 30), mask & (np.arange(30) >= 25)[:, None])
    tiny = np.zeros((30, 30), bool)
    tiny[3, 3:5] = True
    seg = mask_to_segmentation(tiny, "polygon")
    assert isinstance(seg, list)
    np.testing.assert_array_equal(polygons_to_mask(seg, 30, 30), tiny)
    assert mask_to_polygons(mask, min_area=3) == polys[:1]  # an explicit minimum drops it


def test_thin_line_and_border_touching(iou):
    mask = np.zeros((20, 40), bool)
    mask[10, 2:38] = True  # 1 px wide
    mask[:, 39] = True  # touches the right border, top to bottom
    polys = mask_to_polygons(mask, simplify=0)
    back = polygons_to_mask(polys, 20, 40)
    assert iou(mask, back) >= 0.95
    coords = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys])
    assert coords.min() >= 0 and coords[:, 0].max() <= 40 and coords[:, 1].max() <= 20


def test_empty_mask():
    empty = np.zeros((10, 12), bool)
    assert mask_to_polygons(empty) == []
    seg = mask_to_segmentation(empty)
    assert seg["size"] == [10, 12] and not rle_decode(seg).any()


def test_rle_round_trip_matches_pycocotools():
    rng = np.random.default_rng(0)
    mask = rng.random((33, 47)) > 0.6
    rle = rle_encode(mask)
    json.dumps(rle)  # JSON-ready
    assert rle["size"] == [33, 47] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(rle_decode(rle), mask)
    ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"].encode() == ref["counts"]
    assert mask_util.area(ref) == mask.sum()
    # Uncompressed RLE (as in COCO crowd annotations) decodes too.
    flat = mask.T.reshape(-1)
    runs, value, count = [], False, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    np.testing.assert_array_equal(rle_decode({"size": [33, 47], "counts": runs}), mask)


def test_segmentation_to_rle_from_polygons_and_rle():
    polys = [[2, 2, 10, 2, 10, 10, 2, 10], [20, 20, 25, 20, 25, 28]]
    rle = segmentation_to_rle(polys, 30, 30)
    ref = mask_util.merge(mask_util.frPyObjects(polys, 30, 30))
    assert rle["counts"] == ref["counts"].decode() and rle["size"] == [30, 30]
    assert segmentation_to_rle(rle, 30, 30) == rle
    with pytest.raises(ValueError, match="mask_format"):
        mask_to_segmentation(np.ones((3, 3), bool), "bitmap")


def _reference_rle(mask: np.ndarray) -> dict:
    ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in ref["size"]], "counts": ref["counts"].decode()}


def _column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts by the definition: alternate zero/one runs of the column-major pixels."""
    flat = mask.T.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def _edge_cases(h: int, w: int) -> dict[str, np.ndarray]:
    names = ("empty", "full", "corners", "columns", "frame", "wrap")
    cases = {name: np.zeros((h, w), bool) for name in names}
    cases["full"][:] = True
    for y, x in ((0, 0), (-1, -1), (0, -1), (-1, 0)):
        cases["corners"][y, x] = True
    cases["columns"][:, 3:6] = True  # full-height columns: one run through three image columns
    cases["frame"][[0, -1], :] = True
    cases["frame"][:, [0, -1]] = True
    c = min(4, w - 2)
    if c >= 0:  # the bottom of column c continues at the top of column c + 1
        cases["wrap"][max(h - 2, 0) :, c] = True
        cases["wrap"][:3, c + 1] = True
    cases["last_pixel"] = np.zeros((h, w), bool)
    cases["last_pixel"][-1, -1] = True
    cases["first_pixel"] = np.zeros((h, w), bool)
    cases["first_pixel"][0, 0] = True
    cases["one_row"] = np.zeros((h, w), bool)
    cases["one_row"][h // 2, 2:-1] = True
    return cases


@pytest.mark.parametrize("shape", [(13, 17), (1, 9), (9, 1), (2, 2)])
def test_rle_from_crop_matches_pycocotools_edge_cases(shape):
    for name, mask in _edge_cases(*shape).items():
        rle = rle_encode(mask)
        assert rle == _reference_rle(mask), name
        assert rle_counts(mask).tolist() == _column_major_runs(mask), name
        np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_from_crop_matches_pycocotools_random():
    rng = np.random.default_rng(1)
    for k in range(60):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        mask = rng.random((h, w)) < rng.choice([0.02, 0.3, 0.7, 0.98])
        if k % 4 == 0:  # a blob in a random corner, so crops sit on every edge
            mask[:] = False
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            mask[: y + 1 if k % 8 else None, x:] = True
        assert rle_encode(mask) == _reference_rle(mask)
        # The same from a loose crop of it, given directly.
        ys, xs = np.nonzero(mask)
        if ys.size:
            y0, x0 = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 2, 0)
            crop = mask[y0 : ys.max() + 2, x0 : xs.max() + 1]
            assert rle_encode(MaskCrop(crop, x0, y0, h, w)) == _reference_rle(mask)


def test_polygons_of_a_crop_are_shifted_by_its_offset(iou):
    mask = np.zeros((50, 70), np.uint8)
    cv2.circle(mask, (20, 30), 9, 1, -1)
    cv2.rectangle(mask, (40, 0), (69, 12), 1, -1)  # touches the top and right borders
    mask = mask.astype(bool)
    polys = mask_to_polygons(mask)
    assert mask_to_polygons(MaskCrop(mask[:, 8:], 8, 0, 50, 70)) == polys
    assert iou(polygons_to_mask(polys, 50, 70), mask) >= 0.95
    assert mask_to_segmentation(MaskCrop(mask[:, 8:], 8, 0, 50, 70)) == mask_to_segmentation(mask)


def test_hole_areas_match_background_labelling_on_random_masks():
    """hole_areas skips the labelling when OpenCV finds no inner boundary; both must agree on every mask."""

    def labelled(mask):  # 4-connected background components not reaching the padded border
        background = (np.pad(mask.astype(np.uint8), 1) == 0).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
        return sorted(int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, n) if i != labels[0, 0])

    rng = np.random.default_rng(7)
    with_holes = 0
    for _ in range(3000):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        mask = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        want = labelled(mask)
        assert sorted(hole_areas(mask)) == want, mask.astype(int)
        with_holes += bool(want)
    assert 300 < with_holes < 2700  # both branches exercised


def test_polygons_to_mask_takes_any_sequence_of_polygons():
    """A tuple of polygons (or a generator) rasterises like the list: pycocotools' union of the rings of 6+
    numbers; an empty sequence is an empty mask. (The one-path trim made a tuple raise TypeError.)"""
    rings = ([1, 1, 9, 1, 9, 6], [4, 3, 12, 3, 12, 8, 4, 8], [0, 0, 1, 1])
    expected = mask_util.decode(mask_util.merge(mask_util.frPyObjects(list(rings[:2]), 10, 14))).astype(bool)
    assert expected.any()
    for polygons in (rings, list(rings), (r for r in rings)):
        np.testing.assert_array_equal(polygons_to_mask(polygons, 10, 14), expected)
    for empty in ((), [], ([0, 0, 1, 1],)):
        mask = polygons_to_mask(empty, 10, 14)
        assert mask.shape == (10, 14) and mask.dtype == bool and not mask.any()
