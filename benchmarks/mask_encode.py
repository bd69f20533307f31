"""Mask -> RLE / polygon cost on a large image: `instance_records` (crop-based) against the full-size path.

    .venv/bin/python benchmarks/mask_encode.py [--width 4000 --height 3000 --instances 50 --repeat 3]

Builds `--instances` random ellipses (some touching the image border, boxes a few px loose or tight as a
model's are), then times, in the same run:
  * rle:  `instance_records(det, mask_format="rle")` vs `pycocotools.mask.encode` on each full-size mask
          (Fortran copy + encode, what a full-image encoder has to do); the counts must be identical.
  * polygon: `instance_records(det, mask_format="polygon")` vs the same polygons traced from the full mask
          with no box hint (`mask_to_segmentation(det.masks[i])`), which must be identical too.
and prints milliseconds per instance and the ratio. A last line times the same records from masks handed over
as per-box crops (`CroppedMasks`), which skips even the one full-size emptiness check per instance.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from pycocotools import mask as mask_util

from mrseg.outputs.detections import Detections
from mrseg.outputs.mask_crop import CroppedMasks
from mrseg.outputs.masks import mask_to_segmentation
from mrseg.outputs.records import instance_records


def make_detections(width: int, height: int, n: int, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, height, width), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        axes = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
        if i % 5 == 0:  # on a border
            center = (int(rng.choice([0, width - 1])), int(rng.integers(0, height)))
        else:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.ellipse(masks[i], center, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
        if i % 3 == 0:  # a hole, so polygon output falls back to RLE
            cv2.circle(masks[i], center, min(axes) // 3, 0, -1)
        ys, xs = np.nonzero(masks[i].any(1))[0], np.nonzero(masks[i].any(0))[0]
        box = np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)
        boxes[i] = box + rng.uniform(-4, 4, 4).astype(np.float32)  # a model's box is not tight
    return Detections(
        width=width, height=height, boxes=boxes, scores=np.full(n, 0.9, np.float32),
        labels=np.ones(n, np.int64), masks=masks.astype(bool),
    )  # fmt: skip


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    det = make_detections(args.width, args.height, args.instances)
    classes = [{"id": 1, "name": "thing"}]
    n = len(det)
    print(f"{args.width}x{args.height}, {n} instances, best of {args.repeat}")

    def full_size_rle():
        return [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in det.masks]

    t_full, ref = best_of(full_size_rle, args.repeat)
    t_new, recs = best_of(lambda: instance_records(det, classes, mask_format="rle"), args.repeat)
    same = all(r["segmentation"]["counts"] == f["counts"].decode() for r, f in zip(recs, ref, strict=True))
    print(f"rle      instance_records {1e3 * t_new / n:7.2f} ms/inst | full-size pycocotools.encode "
          f"{1e3 * t_full / n:7.2f} ms/inst | speed-up x{t_full / t_new:6.1f} | identical: {same}")

    t_full, ref = best_of(lambda: [mask_to_segmentation(m, "polygon") for m in det.masks], args.repeat)
    t_new, recs = best_of(lambda: instance_records(det, classes, mask_format="polygon"), args.repeat)
    same = all(r["segmentation"] == f for r, f in zip(recs, ref, strict=True))
    print(f"polygon  instance_records {1e3 * t_new / n:7.2f} ms/inst | full-mask mask_to_segmentation "
          f"{1e3 * t_full / n:7.2f} ms/inst | speed-up x{t_full / t_new:6.1f} | identical: {same}")

    crops, origins = [], []
    for m, (x0, y0, x1, y1) in zip(det.masks, det.boxes.astype(int), strict=True):
        x0, y0 = max(x0 - 8, 0), max(y0 - 8, 0)  # the box grown a little, as a model pastes masks
        crops.append(m[y0 : y1 + 8, x0 : x1 + 8].copy())
        origins.append((x0, y0))
    masks = CroppedMasks.from_crops(crops, origins, det.height, det.width)
    cropped = Detections(**{**det.__dict__, "masks": masks})
    for fmt in ("rle", "polygon"):
        t_crop, got = best_of(lambda: instance_records(cropped, classes, mask_format=fmt), args.repeat)  # noqa: B023
        same = got == instance_records(det, classes, mask_format=fmt)
        print(f"{fmt:8s} instance_records, per-box crops (CroppedMasks) {1e3 * t_crop / n:7.2f} ms/inst"
              f" | identical: {same}")


if __name__ == "__main__":
    main()
