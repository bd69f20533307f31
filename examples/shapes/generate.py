"""Synthetic instance-segmentation data: coloured circles, squares and triangles on textured backgrounds.

Writes a COCO dataset per split (`OUT/<split>.json` + `OUT/<split>/*.png`) with exact masks: every pixel of an
instance's mask is painted in that instance's colour, later shapes occlude earlier ones, and the stored mask
is the visible part (RLE). Deterministic: the same seed gives byte-identical files.

    python examples/shapes/generate.py --out data/shapes --train 300 --val 50 --size 256 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [250, 250, 250],
        [20, 20, 20],
    ],
    dtype=np.float32,
)
# With class_colours, each class takes its colours from its own part of the palette (circles warm,
# squares green and blue, triangles purple, magenta and white): colour as well as shape tells them apart.
CLASS_COLOURS = {1: PALETTE[[0, 4, 2]], 2: PALETTE[[1, 3, 6]], 3: PALETTE[[5, 7, 8]]}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient plus blurred noise: float32 [size, size, 3] in 0..255."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return img + 18 * noise


def _shape_mask(rng: np.random.Generator, kind: int, size: int, lo: int, hi: int) -> np.ndarray:
    """One filled shape of category `kind`: bool [size, size]."""
    mask = np.zeros((size, size), np.uint8)
    s = rng.uniform(lo, hi)
    cx, cy = rng.uniform(s / 2, size - s / 2, 2)
    if kind == 1:
        cv2.circle(mask, (round(cx), round(cy)), max(2, round(s / 2)), 1, thickness=-1)
    else:
        n = 4 if kind == 2 else 3
        r = s / 2 if n == 3 else s / math.sqrt(2)
        a0 = rng.uniform(0, 2 * math.pi)
        pts = [
            (cx + r * math.cos(a0 + 2 * math.pi * i / n), cy + r * math.sin(a0 + 2 * math.pi * i / n))
            for i in range(n)
        ]
        cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 1)
    return mask.astype(bool)


def make_image(
    rng: np.random.Generator,
    size: int,
    max_shapes: int,
    lo: int,
    hi: int,
    min_visible: float = 0.6,
    class_colours: bool = False,
):
    """One image and its instances: (uint8 [size, size, 3], list of (category_id, visible bool mask)).
    Every earlier shape stays at least `min_visible` visible (1.0: shapes never overlap); class_colours: see
    CLASS_COLOURS."""
    img = _background(rng, size)
    shapes: list[tuple[int, np.ndarray]] = []
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, max_shapes + 1))  # ~10 % negatives
    for _ in range(count):
        for _attempt in range(20):
            kind = int(rng.integers(1, 4))
            m = _shape_mask(rng, kind, size, lo, hi)
            # Keep every earlier shape at least min_visible visible, so no instance becomes a sliver.
            if all((v & ~m).sum() >= min_visible * v.sum() for _, v in shapes):
                break
        else:
            continue
        shapes = [(k, v & ~m) for k, v in shapes] + [(kind, m)]
        colours = CLASS_COLOURS[kind] if class_colours else PALETTE
        colour = colours[rng.integers(len(colours))] + rng.normal(0, 12, 3)
        shade = 1.0 + 0.08 * rng.normal(0, 1, (size, size, 1)).astype(np.float32)
        img = np.where(m[..., None], colour * shade, img)
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), shapes


def generate_split(
    out_dir: str,
    split: str,
    count: int,
    size: int,
    seed: int,
    max_shapes: int = 4,
    min_shape: int | None = None,
    max_shape: int | None = None,
    min_visible: float = 0.6,
    class_colours: bool = False,
) -> str:
    """Writes `out_dir/<split>/*.png` and `out_dir/<split>.json`; returns the json path."""
    lo = min_shape or max(8, size // 10)
    hi = max_shape or size // 3
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for image_id in range(count):
        img, shapes = make_image(rng, size, max_shapes, lo, hi, min_visible, class_colours)
        name = f"{image_id:05d}.png"
        cv2.imwrite(os.path.join(out_dir, split, name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for kind, m in shapes:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": kind,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    path = os.path.join(out_dir, f"{split}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    os.replace(path + ".tmp", path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--train", type=int, default=300, help="number of training images")
    p.add_argument("--val", type=int, default=50, help="number of held-out images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--max-shapes", type=int, default=4, help="at most this many shapes per image")
    p.add_argument("--min-shape", type=int, help="smallest shape side in pixels (default size/10, >= 8)")
    p.add_argument("--max-shape", type=int, help="largest shape side in pixels (default size/3)")
    p.add_argument(
        "--min-visible",
        type=float,
        default=0.6,
        help="fraction of each shape left visible by later ones (1.0: no overlaps; default 0.6)",
    )
    p.add_argument(
        "--class-colours", action="store_true", help="each class in its own colours (see CLASS_COLOURS)"
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for split, n in (("train", a.train), ("val", a.val)):
        path = generate_split(
            a.out,
            split,
            n,
            a.size,
            a.seed,
            a.max_shapes,
            a.min_shape,
            a.max_shape,
            a.min_visible,
            a.class_colours,
        )
        print(f"{split}: {n} images -> {path}")


if __name__ == "__main__":
    main()
