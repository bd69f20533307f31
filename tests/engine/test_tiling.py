"""Tiles cover the image; merging across tiles gives one detection per object with the full mask."""

import cv2
import numpy as np
import pytest
import torch

from mrseg.engine.predictor import Predictor
from mrseg.engine.tiling import merge_tiles, tile_windows
from mrseg.outputs.mask_crop import CroppedMasks, MaskCrop


@pytest.mark.parametrize(
    "h,w,tile,overlap", [(100, 100, 128, 0.2), (600, 800, 256, 0.25), (513, 1000, 200, 0.0)]
)
def test_windows_cover_every_pixel_inside_the_image(h, w, tile, overlap):
    windows = tile_windows(h, w, tile, overlap)
    cover = np.zeros((h, w), np.int32)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(tile, w) and y1 - y0 == min(tile, h)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    if overlap > 0 and w > tile:
        xs = sorted({x0 for x0, *_ in windows})
        assert all(b - a <= tile * (1 - overlap) + 1 for a, b in zip(xs, xs[1:], strict=False))


def test_bad_tiling_options_raise_clear_errors():
    with pytest.raises(ValueError, match="--tile-overlap"):
        tile_windows(10, 10, 8, 1.0)
    with pytest.raises(ValueError, match="--tile"):
        tile_windows(10, 10, 0, 0.2)


def _tile_result(boxes, labels, masks, scores=None):
    n = len(boxes)
    return {
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "scores": np.array(scores if scores is not None else [0.9] * n, np.float32),
        "labels": np.array(labels, np.int64),
        "masks": np.array(masks, bool).reshape(n, *(masks[0].shape if n else (0, 0))),
    }


def test_object_cut_by_a_tile_edge_is_merged_into_one_full_mask():
    h, w = 100, 180
    windows = [(0, 0, 100, 100), (80, 0, 180, 100)]
    obj = np.zeros((h, w), bool)
    obj[30:60, 60:120] = True  # spans both tiles
    left = obj[:, 0:100]
    right = obj[:, 80:180]
    other = np.zeros((100, 100), bool)
    other[5:15, 5:15] = True  # only in the left tile
    tiles = [
        _tile_result([[60, 30, 100, 60], [5, 5, 15, 15]], [1, 1], [left, other], [0.9, 0.8]),
        _tile_result([[0, 30, 40, 60]], [1], [right], [0.7]),
    ]
    out = merge_tiles(tiles, windows, h, w)
    assert len(out["scores"]) == 2
    assert isinstance(out["masks"], CroppedMasks)  # per-object crops, never N full-size masks
    assert out["masks"].crop(0).crop.size < h * w
    masks = np.asarray(out["masks"])
    big = int(np.argmax(masks.sum((1, 2))))
    np.testing.assert_array_equal(masks[big], obj)
    np.testing.assert_allclose(out["boxes"][big], [60, 30, 120, 60])
    assert out["scores"][big] == pytest.approx(0.9)
    assert masks.dtype == bool and masks.shape == (2, h, w)

    # tiles handing over their masks as crops merge to the same masks
    as_crops = []
    for t in tiles:
        th, tw = t["masks"].shape[1:]
        crops = [MaskCrop.from_mask(m) for m in t["masks"]]
        as_crops.append({**t, "masks": CroppedMasks(crops, th, tw)})
    again = merge_tiles(as_crops, windows, h, w)
    np.testing.assert_array_equal(np.asarray(again["masks"]), masks)


def test_merge_is_class_aware_and_leaves_one_tiles_own_detections_alone():
    windows = [(0, 0, 50, 50), (30, 0, 80, 50)]
    m = np.zeros((50, 50), bool)
    m[10:20, 32:42] = True
    m2 = np.zeros((50, 50), bool)
    m2[10:20, 2:12] = True
    tiles = [
        # same place, two classes, same tile: both kept
        _tile_result([[32, 10, 42, 20], [32, 10, 42, 20]], [1, 2], [m, m]),
        # the same class-1 object seen again by tile 2: merged; its class-3 twin: kept
        _tile_result([[2, 10, 12, 20], [2, 10, 12, 20]], [1, 3], [m2, m2]),
    ]
    out = merge_tiles(tiles, windows, 50, 80)
    assert sorted(out["labels"].tolist()) == [1, 2, 3]

    # Two overlapping class-1 detections of one tile (the model kept both): both stay.
    shifted = np.zeros((50, 50), bool)
    shifted[11:21, 33:43] = True
    out = merge_tiles(
        [_tile_result([[32, 10, 42, 20], [33, 11, 43, 21]], [1, 1], [m, shifted])], windows[:1], 50, 50
    )
    assert len(out["scores"]) == 2


class _BrightBlobs(torch.nn.Module):
    """A stand-in detector with a known answer: every bright connected blob is an instance of class 1."""

    def forward(self, images):
        outs = []
        for im in images:
            gray = (im.mean(0) > 0.5).numpy().astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(gray, connectivity=4)
            boxes, masks = [], []
            for k in range(1, n):
                x, y, bw, bh, _ = stats[k]
                boxes.append([x, y, x + bw, y + bh])
                masks.append(lab == k)
            outs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.full((len(boxes),), 0.9),
                    "labels": torch.ones(len(boxes), dtype=torch.int64),
                    "masks": torch.from_numpy(np.array(masks, bool).reshape(-1, 1, *gray.shape)),
                }
            )
        return outs


def test_tiled_prediction_equals_whole_image_prediction_for_a_tile_independent_detector():
    rng = np.random.default_rng(0)
    image = np.zeros((700, 900, 3), np.uint8)
    for _ in range(12):  # blobs of all sizes, several straddling tile borders
        x, y = rng.integers(0, 850), rng.integers(0, 650)
        cv2.circle(image, (int(x), int(y)), int(rng.integers(5, 60)), (255, 255, 255), -1)
    classes = [{"id": 1, "name": "blob"}]
    whole = Predictor(model=_BrightBlobs(), model_classes=classes, device="cpu")(image)
    tiled = Predictor(model=_BrightBlobs(), model_classes=classes, device="cpu", tile=256, tile_overlap=0.25)
    det = tiled(image)
    assert len(det) == len(whole) > 5
    order_w = np.lexsort(whole.boxes.T[::-1])
    order_t = np.lexsort(det.boxes.T[::-1])
    np.testing.assert_allclose(det.boxes[order_t], whole.boxes[order_w])
    np.testing.assert_array_equal(det.masks[order_t], whole.masks[order_w])
    assert isinstance(det.masks, np.ndarray)  # Python callers get arrays unless they ask for crops
    tiled.mask_crops = True
    cropped = tiled(image)
    assert isinstance(cropped.masks, CroppedMasks)
    np.testing.assert_array_equal(np.asarray(cropped.masks), det.masks)


def _keypoint_tile(boxes, scores, keypoints):
    """A box-only tile result with keypoints [n, K, 3] (tile pixels) and keypoint scores = their x."""
    kp = np.array(keypoints, np.float32).reshape(len(boxes), -1, 3)
    return {
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "scores": np.array(scores, np.float32),
        "labels": np.ones(len(boxes), np.int64),
        "masks": None,
        "keypoints": kp,
        "keypoint_scores": kp[..., 0].copy(),
    }


def test_keypoints_move_with_their_tile_and_a_merged_object_keeps_its_best_members():
    windows = [(0, 0, 100, 100), (60, 20, 160, 120)]
    tiles = [
        # one person whole in the overlap (x 70..90, y 30..80), seen by both tiles; the left one scores lower
        _keypoint_tile([[70, 30, 90, 80]], [0.6], [[[75, 35, 1], [85, 75, 1]]]),
        # the right tile: the same person (tile pixels) scoring 0.9, and one only it sees
        _keypoint_tile(
            [[10, 10, 30, 60], [50, 50, 70, 90]],
            [0.9, 0.8],
            [[[16, 16, 1], [24, 54, 1]], [[55, 55, 1], [65, 85, 1]]],
        ),
    ]
    out = merge_tiles(tiles, windows, 120, 160)
    assert "masks" not in out and out["keypoints"].shape == (2, 2, 3)
    assert out["keypoint_scores"].shape == (2, 2)
    np.testing.assert_allclose(out["scores"], [0.9, 0.8])
    # the merged person: the right tile's keypoints (its best), moved by its window's (60, 20); v kept
    np.testing.assert_allclose(out["keypoints"][0], [[76, 36, 1], [84, 74, 1]])
    np.testing.assert_allclose(out["keypoints"][1], [[115, 75, 1], [125, 105, 1]])
    np.testing.assert_allclose(out["keypoint_scores"], [[16, 24], [55, 65]])  # the tiles' own, not moved


class _BlobPeople(torch.nn.Module):
    """A stand-in keypoint detector (no masks): each bright blob is class 1 (scoring more the larger it is,
    so a blob seen whole beats its parts cut by tile edges) or, when wider than tall, class 2 (score 0.4),
    with two keypoints, its box's top-left and bottom-right corners, scoring its area and minus its area."""

    def forward(self, images):
        outs = []
        for im in images:
            gray = (im.mean(0) > 0.5).numpy().astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(gray, connectivity=4)
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:n]]
            boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            wide = (boxes[:, 2] - boxes[:, 0]) > (boxes[:, 3] - boxes[:, 1])
            ones = torch.ones(len(boxes), 2, 1)
            keypoints = torch.cat([boxes.reshape(-1, 2, 2), ones], dim=2)
            outs.append({
                "boxes": boxes, "labels": 1 + wide.long(),
                "scores": torch.where(wide, 0.4, 0.6 + area / 10**5), "keypoints": keypoints,
                "keypoints_scores": torch.stack([area, -area], dim=1),
            })  # fmt: skip
        return outs


def test_predictor_keeps_keypoints_with_their_instances_through_filters_and_tiles():
    image = np.zeros((300, 420, 3), np.uint8)
    tall = [(20, 30, 40, 90), (200, 60, 225, 130), (330, 200, 350, 280)]  # x0, y0, x1, y1
    for x0, y0, x1, y1 in [*tall, (100, 220, 190, 250)]:  # the last one wide
        image[y0:y1, x0:x1] = 255
    classes = [{"id": 1, "name": "person"}, {"id": 2, "name": "other"}]
    expected = np.array([[[x0, y0, 1], [x1, y1, 1]] for x0, y0, x1, y1 in tall], np.float32)
    for tile in (None, 160):  # every blob lies whole inside some 160-px tile
        det = Predictor(model=_BlobPeople(), model_classes=classes, device="cpu", score=0.5, tile=tile)(image)
        assert det.masks is None and len(det) == 3 and (det.labels == 1).all()
        order = np.argsort(det.boxes[:, 0])
        np.testing.assert_allclose(det.keypoints[order], expected)
        area = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in tall], np.float32)
        np.testing.assert_allclose(det.keypoint_scores[order], np.stack([area, -area], axis=1))
    others = Predictor(model=_BlobPeople(), model_classes=classes, device="cpu", score=0.0, classes=["other"])
    det = others(image)
    np.testing.assert_allclose(det.keypoints, [[[100, 220, 1], [190, 250, 1]]])
