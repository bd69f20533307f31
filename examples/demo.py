"""The offline end-to-end demo (`make demo`): synthetic data -> train -> evaluate -> predict, on the CPU.

1. generates the synthetic shapes dataset (examples/shapes/generate.py): a training and a held-out split;
2. trains an r18-fpn Mask R-CNN from scratch (`--weights none`: no download needed) at 128 px with
   `mrseg train`, evaluating box and mask AP on the held-out split at the end (pycocotools). From scratch
   the backbone and FPN use trainable BatchNorm (`--norm bn`; frozen BN, right for pretrained weights, leaves
   a random network un-normalised), anchors 16..256 px suit 128 px images, and a 64-channel FPN / mask head
   (`--channels 64`) makes a step about 3x cheaper than the paper's 256;
3. runs `mrseg predict` on the held-out images into runs/demo/predict/ (COCO json, results json, overlays;
   not into runs/demo/ itself, which holds the input images: predict skips inputs inside its output folder);
4. prints the held-out mask AP and the wall time.

Everything goes under --out (default runs/demo): data/, train/ (checkpoints, metrics.jsonl, results.png)
and predict/ (annotations.json, results.json, overlay/). Exit status 0 when it ran, whatever the
AP; with --min-ap X it is 4 when the mask AP is below X.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--iters", type=int, default=1300, help="training iterations of --batch images")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (1: one core computes, the other decodes; on a shared "
        "2-core machine more threads mostly wait on each other)",
    )
    p.add_argument(
        "--score", type=float, default=0.5, help="minimum score of the predicted instances (overlays)"
    )
    p.add_argument(
        "--min-ap", type=float, default=None, help="exit 4 when the held-out mask AP is below this"
    )
    a = p.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # inherited by the mrseg subprocesses
    py = sys.executable
    out = Path(a.out)
    data, run_dir = out / "data", out / "train"
    start = time.perf_counter()
    run(
        [
            py,
            "examples/shapes/generate.py",
            "--out",
            str(data),
            "--train",
            str(a.train_images),
            "--val",
            str(a.val_images),
            "--size",
            "128",
            "--max-shapes",
            "3",
            "--min-shape",
            "32",
            "--max-shape",
            "64",
            "--seed",
            "0",
        ]
    )
    run(
        [
            py,
            "-m",
            "mrseg",
            "train",
            "--coco",
            str(data / "train.json"),
            "--images",
            str(data / "train"),
            "--val-coco",
            str(data / "val.json"),
            "--val-images",
            str(data / "val"),
            "--arch",
            "r18-fpn",
            "--weights",
            "none",
            "--iters",
            str(a.iters),
            "--batch",
            str(a.batch),
            "--lr",
            str(a.lr),
            "--schedule",
            "cosine",
            "--warmup-iters",
            "50",
            "--norm",
            "bn",
            "--anchor-sizes",
            "16,32,64,128,256",
            "--channels",
            "64",
            "--clip-grad",
            "10",
            "--min-size",
            "128",
            "--max-size",
            "128",
            "--roi-batch",
            "32",
            "--rpn-proposals",
            "200",
            "--eval-every",
            str(a.iters),
            "--log-every",
            "20",
            "--workers",
            str(a.workers),
            "--device",
            "cpu",
            "--out",
            str(run_dir),
            "--exist-ok",
        ]
    )
    trained = time.perf_counter() - start
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in evals if r.get("type") == "eval"][-1]
    try:
        run([py, "-m", "mrseg", "plot", str(run_dir)])
    except subprocess.CalledProcessError:
        print("(no plot: matplotlib missing)")
    predict_ok = True
    try:
        run(
            [
                py,
                "-m",
                "mrseg",
                "predict",
                str(data / "val"),
                "--weights",
                str(run_dir / "best.pt"),
                "--format",
                "coco,coco-results,overlay",
                "--score",
                str(a.score),
                "--device",
                "cpu",
                "--out",
                str(out / "predict"),
                "--exist-ok",
            ]
        )
    except subprocess.CalledProcessError as e:
        predict_ok = False
        print(f"mrseg predict failed (exit {e.returncode})", file=sys.stderr)
    total = time.perf_counter() - start
    mask_ap, box_ap = final["segm"]["AP"], final["bbox"]["AP"]
    print(
        f"\nheld-out split ({a.val_images} images): mask AP {mask_ap:.3f}, box AP {box_ap:.3f} "
        f"(mask AP50 {final['segm']['AP50']:.3f})"
    )
    print(
        f"wall time {total:.0f} s (data + training + evaluation {trained:.0f} s); outputs in {out}/"
        f"{'' if predict_ok else ' (predict failed)'}"
    )
    if a.min_ap is not None and mask_ap < a.min_ap:
        return 4
    return 0 if predict_ok else 1


if __name__ == "__main__":
    sys.exit(main())
