"""MaskCrop / CroppedMasks: crops found from box hints are exact whatever the box, and every encoder gives the
same output from a crop as from the full-size mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrseg.outputs.detections import Detections
from mrseg.outputs.mask_crop import CroppedMasks, MaskCrop, instance_crop
from mrseg.outputs.masks import mask_to_polygons, mask_to_segmentation, rle_encode
from mrseg.outputs.overlay import draw_detections
from mrseg.outputs.records import instance_records


def _bounds(mask):
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _blob(h=90, w=120):
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (60, 40), (30, 18), 20, 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize(
    "box",
    [
        None,
        (30, 21, 91, 60),  # about right
        (55, 35, 65, 45),  # far too small: pixels outside the widened box -> full scan
        (-50, -50, 500, 500),  # larger than the image
        (200, 200, 300, 300),  # outside the image
        (np.nan, 0, 10, 10),
        (80, 70, 20, 10),  # inverted
    ],
)
def test_from_mask_is_exact_for_any_hint(box):
    mask = _blob()
    mc = MaskCrop.from_mask(mask, box)
    assert mc.tight and mc.bounds == _bounds(mask)
    assert mc.area == mask.sum() and mc.crop.dtype == bool
    np.testing.assert_array_equal(mc.full(), mask)
    assert not np.shares_memory(mc.crop, mask)


def test_from_mask_empty_uint8_and_channel_dim():
    empty = MaskCrop.from_mask(np.zeros((5, 7), np.uint8), (1, 1, 3, 3))
    assert empty.crop.shape == (0, 0) and empty.area == 0 and not empty.full().any()
    assert empty.full().shape == (5, 7)
    mask = np.zeros((1, 6, 8), np.uint8)
    mask[0, 2:4, 3:7] = 255
    mc = MaskCrop.from_mask(mask, (3, 2, 7, 4))
    assert mc.bounds == (3, 2, 7, 4) and mc.crop.all()
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        MaskCrop.from_mask(np.zeros((2, 3, 4)))


def test_crop_must_fit_the_image():
    with pytest.raises(ValueError, match="does not fit"):
        MaskCrop(np.ones((4, 4), bool), 8, 0, 10, 10)
    with pytest.raises(ValueError, match="bool"):
        MaskCrop(np.ones((4, 4), np.uint8), 0, 0, 10, 10)


def test_loose_crop_tightened():
    crop = np.zeros((10, 10), bool)
    crop[3:5, 2:9] = True
    mc = MaskCrop(crop, 5, 6, 30, 40)
    tight = mc.tightened()
    assert tight.bounds == (7, 9, 14, 11) and tight.crop.all()
    np.testing.assert_array_equal(tight.full(), mc.full())
    assert tight.tightened() is tight


def _random_masks(rng, n, h, w):
    masks = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        cx, cy = int(rng.integers(-10, w + 10)), int(rng.integers(-10, h + 10))
        ax = (int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2)))
        cv2.ellipse(masks[k], (cx, cy), ax, float(rng.integers(0, 180)), 0, 360, 1, -1)
        if k % 3 == 0:
            cv2.circle(masks[k], (cx, cy), max(1, min(ax) // 2), 0, -1)  # a hole
    masks[0] = 1  # the whole image
    masks[1] = 0  # nothing
    return masks.astype(bool)


def test_records_from_box_crops_equal_full_size_encoding(classes):
    """instance_records (box hints, crops) == the encoders run on each full-size mask with no hint."""
    rng = np.random.default_rng(3)
    h, w = 70, 90
    masks = _random_masks(rng, 24, h, w)
    boxes = np.array([_bounds(m) if m.any() else (0, 0, 0, 0) for m in masks], np.float32)
    boxes += rng.uniform(-6, 6, boxes.shape).astype(np.float32)  # loose, tight and wrong boxes
    det = Detections(
        width=w, height=h, boxes=boxes, scores=np.full(len(masks), 0.5, np.float32),
        labels=rng.integers(1, 4, len(masks)), masks=masks,
    )  # fmt: skip
    for fmt in ("polygon", "rle"):
        recs = instance_records(det, classes, mask_format=fmt)
        for r, m in zip(recs, masks, strict=True):
            assert r["area"] == int(m.sum())
            assert r["segmentation"] == mask_to_segmentation(m, "rle")
            polygons = mask_to_segmentation(m, fmt)
            assert r.get("polygons", r["segmentation"]) == polygons
    for m in masks:
        assert mask_to_polygons(MaskCrop.from_mask(m)) == mask_to_polygons(m)


def test_cropped_masks_reads_like_the_array():
    rng = np.random.default_rng(5)
    full = _random_masks(rng, 6, 40, 50)
    crops = [MaskCrop.from_mask(m) for m in full]
    cm = CroppedMasks(crops, 40, 50)
    assert cm.shape == (6, 40, 50) and len(cm) == 6 and cm.ndim == 3 and cm.dtype == bool
    np.testing.assert_array_equal(np.asarray(cm), full)
    np.testing.assert_array_equal(cm[2], full[2])
    np.testing.assert_array_equal(np.asarray(cm[1:4]), full[1:4])
    keep = np.array([True, False, True, False, False, True])
    np.testing.assert_array_equal(np.asarray(cm[keep]), full[keep])
    np.testing.assert_array_equal(np.asarray(cm[[5, 0]]), full[[5, 0]])
    assert [m.sum() for m in cm] == [m.sum() for m in full]
    with pytest.raises(ValueError, match="stack"):
        CroppedMasks([MaskCrop.from_mask(np.ones((3, 3), bool))], 40, 50)


def test_from_crops_clips_to_the_image():
    box_masks = [np.ones((10, 10), np.uint8), np.ones((4, 6), bool), np.ones((3, 3), bool)]
    origins = [(-3, -2), (27, 17), (40, 40)]  # over the top-left corner, over the bottom-right, outside
    cm = CroppedMasks.from_crops(box_masks, origins, 20, 30)
    want = np.zeros((3, 20, 30), bool)
    want[0, :8, :7] = True
    want[1, 17:, 27:] = True
    np.testing.assert_array_equal(np.asarray(cm), want)
    assert instance_crop(cm, 2).area == 0
    with pytest.raises(ValueError, match="origins"):
        CroppedMasks.from_crops(box_masks, origins[:2], 20, 30)


def test_detections_with_cropped_masks_give_the_same_outputs(make_dets, classes):
    det = make_dets(track=True)
    # Loose per-box crops, as a model pastes them: the box grown by 3 px.
    crops, origins = [], []
    for m, b in zip(det.masks, det.boxes.astype(int), strict=True):
        x0, y0, x1, y1 = b[0] - 3, b[1] - 3, b[2] + 3, b[3] + 3
        cx0, cy0 = max(x0, 0), max(y0, 0)
        crops.append(m[cy0:y1, cx0:x1])
        origins.append((cx0, cy0))
    cropped = Detections(**{**det.__dict__, "masks": CroppedMasks.from_crops(crops, origins, 60, 80)})
    for fmt in ("polygon", "rle"):
        assert instance_records(cropped, classes, fmt) == instance_records(det, classes, fmt)
    image = np.full((60, 80, 3), 90, np.uint8)
    recs = instance_records(det, classes)
    np.testing.assert_array_equal(draw_detections(image, cropped, recs), draw_detections(image, det, recs))
    assert rle_encode(cropped.masks.crop(2)) == rle_encode(det.masks[2])


def test_window_reads_any_part_of_the_image_mask():
    mask = np.zeros((6, 9), bool)
    mask[1:4, 2:6] = True
    mask[2, 3] = False
    mc = MaskCrop.from_mask(mask)
    for x0, y0, x1, y1 in [(0, 0, 9, 6), (3, 2, 5, 3), (-2, -1, 4, 3), (5, 3, 12, 8), (7, 4, 9, 6)]:
        padded = np.zeros((20, 20), bool)
        padded[5:11, 5:14] = mask  # the image at offset (5, 5), False around it
        expected = padded[y0 + 5 : y1 + 5, x0 + 5 : x1 + 5]
        np.testing.assert_array_equal(mc.window(x0, y0, x1, y1), expected)
