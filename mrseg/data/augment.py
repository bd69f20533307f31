"""Training-time augmentation on (image uint8 [H, W, 3], target of numpy arrays, rng).

Every transform takes the random generator explicitly, so a sample's augmentation is a function of its seed
(reproducible across workers, processes and `--resume`).

Multi-scale training is not done here: the model's input transform resizes every image to its `min_size`, so
scale jitter is asked of the model instead (`build_model(..., min_size=(640, ..., 800))` draws one size per
image in training and uses the last one in eval).
"""

from __future__ import annotations

import numpy as np


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target


def hflip(image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
    """Mirror left-right: image [H, W, 3], boxes [N, 4] xyxy (x -> W - x), masks [N, H, W]."""
    width = image.shape[1]
    target = dict(target)
    boxes = np.asarray(target["boxes"], np.float32)
    target["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    target["masks"] = np.ascontiguousarray(target["masks"][:, :, ::-1])
    return np.ascontiguousarray(image[:, ::-1]), target


class RandomHorizontalFlip:
    """Flips with probability p (image, boxes and masks together)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: np.ndarray, target: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        if rng.random() < self.p:
            return hflip(image, target)
        return image, target


def train_transforms(flip: float = 0.5) -> Compose:
    """The default training augmentation."""
    return Compose([RandomHorizontalFlip(flip)] if flip > 0 else [])
