"""Keypoint R-CNN from scratch on synthetic stick figures, offline on the CPU: data -> train -> keypoint AP.

1. generates stick figures with COCO's 17 keypoints (examples/stickfigures/generate.py), a training and a
   held-out split;
2. trains an r18-fpn-kp Keypoint R-CNN from scratch (`--weights none`, trainable BatchNorm, 64-channel FPN so
   a 128-wide keypoint head, anchors 16..256 px for 128 px images) with `mrseg train`, which validates on the
   held-out split with pycocotools' OKS keypoint AP (and box AP) every --eval-every iterations and keeps the
   best keypoint AP as best.pt;
3. draws best.pt's detections (score >= --score) with their skeletons on the first held-out images into
   OUT/predictions.jpg and prints the held-out keypoint AP and the wall time.

    python examples/stickfigures/demo.py --out runs/kpdemo --iters 600

Exit status 0 when it ran; with --min-ap X, 4 when the keypoint AP is below X.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def draw_predictions(weights: Path, ann_file: Path, image_dir: Path, out: Path, score: float, n: int = 8):
    """A grid of the first `n` held-out images with best.pt's boxes, keypoints and skeleton."""
    import cv2
    import numpy as np
    import torch

    from mrseg.data.images import read_image
    from mrseg.model.zoo import load_model

    model, info = load_model(weights, box_score_thresh=score)
    skeleton = info.classes[0].get("skeleton", [])
    images = json.loads(ann_file.read_text())["images"][:n]
    tiles = []
    for entry in images:
        image = read_image(image_dir / entry["file_name"])
        with torch.no_grad():
            (det,) = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
        canvas = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        for box, kps in zip(det["boxes"].numpy() * 3, det["keypoints"].numpy(), strict=True):
            cv2.rectangle(
                canvas, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (255, 255, 0), 1
            )
            pts = kps[:, :2] * 3
            for a, b in skeleton:
                cv2.line(
                    canvas,
                    tuple(int(v) for v in pts[a - 1]),
                    tuple(int(v) for v in pts[b - 1]),
                    (255, 255, 255),
                    1,
                )
            for i, (x, y) in enumerate(pts):
                # the figure's left side red, right side blue, the middle (nose) green
                colour = (0, 255, 0) if i == 0 else (255, 0, 0) if i % 2 else (0, 0, 255)
                cv2.circle(canvas, (int(x), int(y)), 3, colour, -1)
        tiles.append(canvas)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/kpdemo", help="output folder (default runs/kpdemo)")
    p.add_argument("--iters", type=int, default=600, help="training iterations of --batch images")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--score", type=float, default=0.5, help="minimum score of the drawn detections")
    p.add_argument("--min-ap", type=float, default=None, help="exit 4 when the keypoint AP is below this")
    a = p.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    py = sys.executable
    out = Path(a.out)
    data, run_dir = out / "data", out / "train"
    start = time.perf_counter()
    run(
        [py, "examples/stickfigures/generate.py", "--out", str(data), "--train", str(a.train_images),
         "--val", str(a.val_images), "--size", "128", "--max-people", "3", "--seed", "0"]
    )  # fmt: skip
    run(
        [
            py, "-m", "mrseg", "train",
            "--coco", str(data / "train.json"), "--images", str(data / "train"),
            "--val-coco", str(data / "val.json"), "--val-images", str(data / "val"),
            "--arch", "r18-fpn-kp", "--weights", "none", "--norm", "bn",
            "--iters", str(a.iters), "--batch", str(a.batch), "--lr", str(a.lr),
            "--schedule", "cosine", "--warmup-iters", "50", "--clip-grad", "10",
            "--anchor-sizes", "16,32,64,128,256", "--channels", "64",
            "--min-size", "128", "--max-size", "128", "--roi-batch", "32", "--rpn-proposals", "200",
            "--eval-every", str(a.eval_every), "--log-every", "20", "--workers", str(a.workers),
            "--device", "cpu", "--out", str(run_dir), "--exist-ok",
        ]
    )  # fmt: skip
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("type") == "eval"]
    best = max(evals, key=lambda r: r["keypoints"]["AP"])
    draw_predictions(run_dir / "best.pt", data / "val.json", data / "val", out / "predictions.jpg", a.score)
    for r in evals:
        kp = r["keypoints"]
        box = r["bbox"]["AP"]
        print(f"iter {r['iter']}: keypoint AP {kp['AP']:.3f} (AP50 {kp['AP50']:.3f}), box AP {box:.3f}")
    ap = best["keypoints"]["AP"]
    print(
        f"held-out keypoint AP {ap:.3f} (best.pt, iter {best['iter']}); {a.iters} iterations, "
        f"{seconds / 60:.1f} min in all; {out / 'predictions.jpg'}"
    )
    return 4 if a.min_ap is not None and ap < a.min_ap else 0


if __name__ == "__main__":
    sys.exit(main())
