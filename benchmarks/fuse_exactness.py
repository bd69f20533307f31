"""How far `mrseg predict`'s fused copy (BatchNorms folded into channels_last convs, the default) moves a
trained model's detections from the model as loaded (`--no-fuse`, which on the CPU in fp32 is torchvision's
arithmetic to the bit: tests/model/test_keypoint_faster_rcnn.py, tests/cli/test_predict_keypoints.py).

Random weights amplify float rounding (benchmarks/fold_rounding.py: ~1e-2 px); this measures a trained model,
e.g. the one `make demo` trains, over its held-out images:

    python benchmarks/fuse_exactness.py runs/demo/train/best.pt runs/demo/data/val [--images 50]

Prints the detections compared, the largest box difference (px) and score difference, and how many images
gave a different number of detections. Detections are paired by nearest box, not by index (near-equal scores
may swap places).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrseg.engine.predict.predictor import Predictor  # noqa: E402


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("weights")
    parser.add_argument("images", type=Path)
    parser.add_argument("--images", dest="limit", type=int, default=50, help="first N images (sorted)")
    parser.add_argument("--score", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[: args.limit]
    fused = Predictor(args.weights, device="cpu", score=args.score)
    plain = Predictor(args.weights, device="cpu", score=args.score, fuse=False)
    compared, box_diff, score_diff, count_differs = 0, 0.0, 0.0, 0
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        a, b = fused(rgb), plain(rgb)
        if len(a.boxes) != len(b.boxes):
            count_differs += 1
            continue
        if len(a.boxes) == 0:
            continue
        distance = np.abs(np.asarray(b.boxes)[:, None] - np.asarray(a.boxes)[None]).max(-1)  # [plain, fused]
        nearest = distance.argmin(1)
        compared += len(nearest)
        box_diff = max(box_diff, float(distance.min(1).max()))
        scores = np.abs(np.asarray(b.scores) - np.asarray(a.scores)[nearest])
        score_diff = max(score_diff, float(scores.max()))
    print(f"{args.weights}: {len(paths)} images, {compared} detections (score >= {args.score}); fused vs "
          f"--no-fuse: boxes {box_diff:.2e} px, scores {score_diff:.2e}; {count_differs} images with a "
          "different number of detections")  # fmt: skip


if __name__ == "__main__":
    main()
