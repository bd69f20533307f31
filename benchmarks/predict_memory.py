"""Peak memory of `predict` over long runs: it should not grow with the number of inputs.

Runs the whole engine (sources, DataLoader workers, writer thread, journal, per-item files, finalize into
annotations.json) over N tiny generated images, with a stand-in model that returns 20 instances with masks
per image at no compute cost, so what is measured is the engine's own memory. Each N runs in a fresh process
and reports its peak RSS (ru_maxrss) and how the RSS evolved (sampled every 0.2 s).

    python benchmarks/predict_memory.py                 # N = 300, 1000, 3000
    python benchmarks/predict_memory.py --sizes 500 5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch


class FakeMaskRCNN(torch.nn.Module):
    """The forward contract of docs/internals.md with fixed-size random output: 20 boxes + full-size masks."""

    def forward(self, images):
        out = []
        for im in images:
            h, w = im.shape[-2:]
            g = torch.Generator().manual_seed(int(im.sum().item() * 1000) % 2**31)
            xy = torch.rand(20, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 4 + torch.rand(20, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4])
            boxes = torch.cat([xy, xy + wh], 1)
            masks = torch.zeros(20, 1, h, w, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
                masks[i, 0, y0:y1, x0:x1] = True
            out.append(
                {
                    "boxes": boxes,
                    "scores": torch.rand(20, generator=g) * 0.5 + 0.5,
                    "labels": torch.randint(1, 4, (20,), generator=g),
                    "masks": masks,
                }
            )
        return out


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(n: int, workdir: Path, formats: str) -> dict:
    from mrseg.engine.predict_run import predict
    from mrseg.engine.predictor import Predictor

    images = workdir / f"images{n}"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        p = images / f"{i:06d}.jpg"
        if not p.exists():
            cv2.imwrite(str(p), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    classes = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    predictor = Predictor(model=FakeMaskRCNN(), model_classes=classes, device="cpu", score=0.0)
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(_rss_mb())
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    start_rss = _rss_mb()
    thread.start()
    t0 = time.perf_counter()
    summary = predict(
        [str(images)], predictor=predictor, out=workdir / f"out{n}", formats=formats, workers=2, quiet=True
    )
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    quarter = max(1, len(samples) // 4)
    return {
        "n": n,
        "processed": summary.processed,
        "instances": summary.instances,
        "seconds": round(seconds, 1),
        "rss_start_mb": round(start_rss, 1),
        "rss_first_quarter_max_mb": round(max(samples[:quarter]), 1),
        "rss_last_quarter_max_mb": round(max(samples[-quarter:]), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "annotations_json_mb": round((workdir / f"out{n}" / "annotations.json").stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--formats", default="coco,coco-results,jsonl,labelme")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.workdir), args.formats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--workdir", tmp, "--formats", args.formats],
                capture_output=True,
                text=True,
                env=dict(os.environ),
            )
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
