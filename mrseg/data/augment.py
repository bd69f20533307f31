"""Training-time augmentation on (image uint8 [H, W, 3], target of numpy arrays, rng).

Every transform takes the random generator explicitly, so a sample's augmentation is a function of its seed
(reproducible across workers, processes and `--resume`). Multi-scale training is the model's input transform
(`build_model(..., min_size=(640, ..., 800))` draws one size per image in training), not done here.
"""

from __future__ import annotations

import re

import numpy as np


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target


def hflip(image: np.ndarray, target: dict, keypoint_flip: list[int] | None = None) -> tuple[np.ndarray, dict]:
    """Mirror left-right: image [H, W, 3], boxes [N, 4] xyxy (x -> W - x), masks [N, H, W] when present,
    keypoints [N, P, 3] when present (x -> W - x, and keypoint i takes the place of `keypoint_flip[i]`, so a
    left eye becomes a right eye; unlabelled ones stay (0, 0, 0))."""
    width = image.shape[1]
    target = dict(target)
    boxes = np.asarray(target["boxes"], np.float32)
    target["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    if "masks" in target:
        # copy(), not ascontiguousarray: an empty [0, H, W] view counts as contiguous and would keep its
        # negative stride, which torch.from_numpy refuses
        target["masks"] = target["masks"][:, :, ::-1].copy()
    if "keypoints" in target:
        keypoints = np.array(target["keypoints"], np.float32)
        if keypoint_flip is not None:
            keypoints = keypoints[:, keypoint_flip]
        labelled = keypoints[..., 2] > 0
        keypoints[..., 0] = np.where(labelled, width - keypoints[..., 0], 0.0)
        target["keypoints"] = keypoints
    return np.ascontiguousarray(image[:, ::-1]), target


class RandomHorizontalFlip:
    """Flips with probability p (image, boxes, masks and keypoints together; `keypoint_flip`: see hflip)."""

    def __init__(self, p: float = 0.5, keypoint_flip: list[int] | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p
        self.keypoint_flip = list(keypoint_flip) if keypoint_flip is not None else None

    def __call__(self, image: np.ndarray, target: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        if rng.random() < self.p:
            return hflip(image, target, self.keypoint_flip)
        return image, target


def train_transforms(flip: float = 0.5, keypoint_flip: list[int] | None = None) -> Compose:
    """The default training augmentation (`keypoint_flip`: the dataset's left/right map, for keypoints)."""
    return Compose([RandomHorizontalFlip(flip, keypoint_flip)] if flip > 0 else [])


def keypoint_flip_map(names: list[str]) -> list[int]:
    """flip[i]: the keypoint that keypoint i becomes in the mirrored image: "left_eye" <-> "right_eye" (any
    "left" / "right" in the name, as in COCO's names), the others themselves."""
    index = {n: i for i, n in enumerate(names)}
    flip = []
    for i, name in enumerate(names):
        other = re.sub("left|right", _mirror, name, flags=re.IGNORECASE)
        flip.append(index.get(other, i))
    return flip


def _mirror(match: re.Match) -> str:
    """left <-> right, keeping the case pattern (left, Left, LEFT)."""
    word = match.group(0)
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other
