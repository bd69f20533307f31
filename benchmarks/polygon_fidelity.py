"""Round-trip IoU of our polygon formats through each consumer's own rasteriser (issue 11, point 3).

Each mask goes through annotations.json's polygon segmentation, labelme/<name>.json and yolo/labels/<name>.txt
(as `mrseg predict` writes them) and back through pycocotools, labelme's `shape_to_mask` and ultralytics'
`polygon2mask`. Prints mean, min and share below 0.9 per consumer and mask set.

    PYTHONPATH=$PWD python benchmarks/polygon_fidelity.py [--simplify S] [--stride N] [--npz masks.npz]

`--npz`: extra masks (bool [N, H, W] under key `masks`, e.g. a model's pasted masks). The `yolo-dataset`
column is ultralytics' dataset path: `resample_segments` (1000 points) before `polygon2mask`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tests.outputs.fidelity_cases import CONSUMERS, iou, real_masks, round_trip, synthetic_masks

COLUMNS = (*CONSUMERS, "yolo-dataset")


def yolo_dataset_mask(line: str, height: int, width: int) -> np.ndarray:
    """What ultralytics' YOLODataset draws for a label line: resampled (>= 1000 points), then polygon2mask."""
    from ultralytics.data.utils import polygon2mask
    from ultralytics.utils.ops import resample_segments

    seg = np.array(line.split()[1:], dtype=np.float32).reshape(-1, 2)
    seg = resample_segments([seg], n=max(1000, len(seg) + 1))[0] * (width, height)
    return polygon2mask((height, width), [seg.reshape(-1)]).astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simplify", type=float, default=None)
    parser.add_argument("--stride", type=int, default=1, help="use every N-th val2014 annotation")
    parser.add_argument("--npz", default=None)
    args = parser.parse_args()
    sets = {
        "nuts": real_masks("nuts"),
        "val2014": real_masks("val2014", stride=args.stride),
        "synthetic": synthetic_masks(),
    }
    if args.npz:
        sets["npz"] = ((m, f"npz:{k}") for k, m in enumerate(np.load(args.npz)["masks"].astype(bool)))
    for name, masks in sets.items():
        ious = {c: [] for c in COLUMNS}
        worst = {c: (2.0, "") for c in COLUMNS}
        n16 = below08 = 0
        t0 = time.perf_counter()
        for mask, tag in masks:
            back = round_trip(mask, args.simplify)
            h, w = mask.shape
            back["yolo-dataset"] = yolo_dataset_mask(back["_lines"][0], h, w) if back["_lines"] else 0 * mask
            big = mask.sum() >= 16
            n16 += big
            for c in COLUMNS:
                v = iou(mask, back[c])
                ious[c].append(v)
                below08 += big and v < 0.8 and c != "yolo-dataset"
                worst[c] = min(worst[c], (v, tag))
        dt = time.perf_counter() - t0
        print(f"{name}: {len(ious['coco'])} masks ({n16} of >= 16 px), {dt:.1f} s, {below08} (mask, consumer)"
              " pairs of >= 16 px below 0.8")
        for c in COLUMNS:
            v = np.array(ious[c])
            low = np.mean(v < 0.9)
            print(f"  {c:8s} mean {v.mean():.4f}  min {v.min():.4f} ({worst[c][1]})  <0.9 {low:.3f}")


if __name__ == "__main__":
    main()
