"""Horizontal flip keeps image, boxes and masks consistent."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.data.augment import RandomHorizontalFlip, hflip
from mrseg.data.coco import to_tensors


def _sample(rng):
    h, w = 30, 50
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), np.uint8)
    masks[0, 3:10, 4:20] = 1
    masks[1, 12:29, 31:48] = 1
    boxes = np.array([[4, 3, 20, 10], [31, 12, 48, 29]], np.float32)
    return image, {"boxes": boxes, "labels": np.array([1, 2]), "masks": masks, "image_id": 3}


def _mask_box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_hflip_moves_boxes_with_masks():
    image, target = _sample(np.random.default_rng(0))
    fimage, ft = hflip(image, target)
    np.testing.assert_array_equal(fimage[:, 0], image[:, -1])
    for box, mask in zip(ft["boxes"], ft["masks"], strict=True):
        assert list(box) == _mask_box(mask)
    assert ft["labels"].tolist() == [1, 2] and ft["image_id"] == 3
    back, bt = hflip(fimage, ft)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(bt["boxes"], target["boxes"])
    np.testing.assert_array_equal(bt["masks"], target["masks"])


@pytest.mark.parametrize(
    "empty_masks",
    [np.zeros((0, 8, 9), np.uint8), np.array([], np.uint8).reshape(-1, 8, 9)],
    ids=["zeros", "reshaped"],  # the dataset builds the second; its flipped view keeps a negative stride
)
def test_hflip_of_a_negative(empty_masks):
    image = np.zeros((8, 9, 3), np.uint8)
    target = {
        "boxes": np.zeros((0, 4), np.float32),
        "labels": np.zeros((0,), np.int64),
        "masks": empty_masks,
        "image_id": 0,
    }
    flipped, t = hflip(image, target)
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 8, 9)
    _, tensors = to_tensors(flipped, t)
    assert tensors["masks"].shape == (0, 8, 9)


def test_random_flip_probability_and_seed():
    image, target = _sample(np.random.default_rng(1))
    never, always = RandomHorizontalFlip(0.0), RandomHorizontalFlip(1.0)
    assert never(image, target, np.random.default_rng(0))[0] is image
    np.testing.assert_array_equal(always(image, target, np.random.default_rng(0))[0], image[:, ::-1])
    half = RandomHorizontalFlip(0.5)
    flipped = [half(image, target, np.random.default_rng(s))[0] is not image for s in range(200)]
    assert 60 < sum(flipped) < 140
    assert flipped == [half(image, target, np.random.default_rng(s))[0] is not image for s in range(200)]
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(1.5)
