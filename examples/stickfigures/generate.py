"""Synthetic person keypoints: stick figures with COCO's 17 keypoints on textured backgrounds.

Writes a COCO person-keypoints dataset per split (`OUT/<split>.json` + `OUT/<split>/*.png`): one category,
"person", with COCO's `keypoints` names and `skeleton` (so pycocotools' OKS evaluation applies as is). Each
figure faces the camera (its left side on the image's right, as COCO people facing the camera), with a random
pose, size, colour and tilt; later figures occlude earlier ones. Per annotation: the visible mask (RLE) with
its area and box, `keypoints` [x, y, v] x 17 (v = 2 visible, 1 covered by a later figure, 0 outside the image
or, for a few figures, not labelled at all: num_keypoints 0), `num_keypoints`. About 10 % of the images have
no figure. Deterministic: the same seed gives byte-identical files.

    python examples/stickfigures/generate.py --out data/sticks --train 300 --val 50 --size 128 --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from mrseg.model.coco_classes import coco_person_classes


def _shapes_background():
    """The shapes demo's background (a gradient plus blurred noise), shared rather than copied."""
    path = Path(__file__).resolve().parents[1] / "shapes" / "generate.py"
    spec = importlib.util.spec_from_file_location("shapes_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._background


_background = _shapes_background()

# COCO keypoint order: nose, eyes (l, r), ears (l, r), shoulders, elbows, wrists, hips, knees, ankles (l, r)
# The figure's own left is +x (it faces the camera); unit height, y down, head top at 0.
_HEAD = {0: (0.0, 0.11), 1: (0.03, 0.08), 2: (-0.03, 0.08), 3: (0.06, 0.1), 4: (-0.06, 0.1)}
_LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))


def figure_points(rng: np.random.Generator) -> np.ndarray:
    """A random pose in unit-height figure coordinates: float [17, 2]."""
    p = np.zeros((17, 2))
    for k, xy in _HEAD.items():
        p[k] = xy
    shoulder, hip = rng.uniform(0.09, 0.14), rng.uniform(0.06, 0.1)
    p[5], p[6] = (shoulder, 0.24), (-shoulder, 0.24)
    p[11], p[12] = (hip, 0.55), (-hip, 0.55)
    for side, sign in ((0, 1.0), (1, -1.0)):  # 0: the figure's left (+x), 1: its right
        # arm angles from straight down, turned outward; legs likewise, less
        a1 = math.radians(rng.uniform(10, 150))
        a2 = a1 + math.radians(rng.uniform(-40, 60))
        elbow = p[5 + side] + 0.17 * np.array([sign * math.sin(a1), math.cos(a1)])
        p[7 + side] = elbow
        p[9 + side] = elbow + 0.15 * np.array([sign * math.sin(a2), math.cos(a2)])
        b1 = math.radians(rng.uniform(0, 35))
        b2 = b1 + math.radians(rng.uniform(-25, 10))
        knee = p[11 + side] + 0.22 * np.array([sign * math.sin(b1), math.cos(b1)])
        p[13 + side] = knee
        p[15 + side] = knee + 0.22 * np.array([sign * math.sin(b2), math.cos(b2)])
    return p


def draw_figure(points: np.ndarray, height: float, size: int, colour) -> tuple[np.ndarray, np.ndarray]:
    """Paints a figure whose keypoints are `points` (pixels, float [17, 2]) -> (mask bool [size, size],
    the same mask's colour layer uint8 [size, size, 3])."""
    layer = np.zeros((size, size, 3), np.uint8)
    shift = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
    scale = 1 << shift

    def pt(k):
        return tuple(int(round(v * scale)) for v in points[k])

    thick = max(2, int(round(height / 16)))
    colour = tuple(int(c) for c in colour)
    torso = np.round(points[[5, 6, 12, 11]] * scale).astype(np.int32)
    cv2.fillPoly(layer, [torso], colour, lineType=cv2.LINE_AA, shift=shift)
    for a, b in _LIMBS:
        cv2.line(layer, pt(a), pt(b), colour, thick, lineType=cv2.LINE_AA, shift=shift)
    neck = (points[5] + points[6]) / 2
    cv2.line(layer, tuple(int(round(v * scale)) for v in neck), pt(0), colour, thick, cv2.LINE_AA, shift)
    cv2.circle(layer, pt(0), int(round(0.075 * height * scale)), colour, -1, cv2.LINE_AA, shift)
    mask = layer.max(axis=2) > 0
    # the face: dark eyes and a dark nose tip, so the head has a front
    dot = int(round(max(1.0, 0.012 * height) * scale))
    for k in (0, 1, 2):
        cv2.circle(layer, pt(k), dot, (20, 20, 20), -1, cv2.LINE_AA, shift)
    return mask, layer


def make_image(rng: np.random.Generator, size: int, max_people: int, lo: int, hi: int):
    """One image and its people: (uint8 [size, size, 3], list of (visible mask, keypoints float [17, 3]))."""
    img = _background(rng, size)
    people: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, max_people + 1))
    for _ in range(count):
        height = rng.uniform(lo, hi)
        unit = figure_points(rng)
        angle = math.radians(rng.uniform(-15, 15))
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centre = rng.uniform([0.1 * size, 0.15 * size], [0.9 * size, 0.85 * size])
        points = (unit - [0.0, 0.5]) @ rot.T * height + centre
        colour = np.clip(rng.uniform(60, 255, 3) * rng.uniform(0.6, 1.0), 0, 255)
        mask, layer = draw_figure(points, height, size, colour)
        if not mask.any():
            continue
        # earlier figures lose what this one covers; their keypoints under it become "hidden" (v = 1)
        for other_mask, other_kp in people:
            other_mask &= ~mask
            for kp in other_kp:
                x, y = int(kp[0]), int(kp[1])
                if kp[2] == 2 and 0 <= x < size and 0 <= y < size and mask[y, x]:
                    kp[2] = 1
        inside = (points[:, 0] >= 0) & (points[:, 0] < size) & (points[:, 1] >= 0) & (points[:, 1] < size)
        keypoints = np.zeros((17, 3))
        keypoints[inside, :2] = points[inside]
        keypoints[inside, 2] = 2
        people.append((mask, keypoints))
        img = np.where(mask[..., None], layer.astype(np.float32), img)
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), people


def generate_split(
    out_dir: str,
    split: str,
    count: int,
    size: int,
    seed: int,
    max_people: int = 3,
    min_height: int | None = None,
    max_height: int | None = None,
    unlabelled: float = 0.05,
) -> str:
    """Writes `out_dir/<split>/*.png` and `out_dir/<split>.json`; returns the json path. unlabelled: the
    share of figures whose keypoints are not labelled (num_keypoints 0, boxes and masks only)."""
    lo = min_height or size // 3
    hi = max_height or int(size * 0.8)
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for image_id in range(count):
        img, people = make_image(rng, size, max_people, lo, hi)
        name = f"{image_id:05d}.png"
        cv2.imwrite(os.path.join(out_dir, split, name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for mask, keypoints in people:
            if mask.sum() < 16:  # almost wholly covered: not a person any more
                continue
            if rng.random() < unlabelled:
                keypoints = np.zeros_like(keypoints)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            flat = [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(keypoints.flatten())]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                    "keypoints": flat,
                    "num_keypoints": int((keypoints[:, 2] > 0).sum()),
                }
            )
    path = os.path.join(out_dir, f"{split}.json")
    data = {"images": images, "annotations": annotations, "categories": coco_person_classes()}
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--train", type=int, default=300, help="number of training images")
    p.add_argument("--val", type=int, default=50, help="number of held-out images")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--max-people", type=int, default=3, help="at most this many figures per image")
    p.add_argument("--min-height", type=int, help="smallest figure height in pixels (default size/3)")
    p.add_argument("--max-height", type=int, help="largest figure height in pixels (default 0.8 size)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for split, count in (("train", a.train), ("val", a.val)):
        if count > 0:
            path = generate_split(
                a.out, split, count, a.size, a.seed, a.max_people, a.min_height, a.max_height
            )
            print(f"wrote {path} ({count} images)")


if __name__ == "__main__":
    main()
