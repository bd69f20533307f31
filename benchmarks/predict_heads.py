"""Predict speed of the other heads: mrseg's Keypoint R-CNN and Faster R-CNN against torchvision's
`keypointrcnn_resnet50_fpn` and `fasterrcnn_resnet50_fpn` with identical seeded weights (torchvision's
builders, converted into ours by the key converter, as tests/model does), in one process and one run.

Each photo goes through both models in turn (interleaved, so both see the same machine state): torchvision's
model called as a user calls it, ours through `Predictor` as `mrseg predict` runs it (BatchNorm folded,
channels_last, detections to the host). Prints images/s of each, the ratio ours / torchvision (> 1: ours is
faster) and the largest box and keypoint differences over the detections both keep.

    python benchmarks/predict_heads.py                          # both models, 2 photos at 640x480, 3 rounds
    python benchmarks/predict_heads.py --kinds keypoint --size 1280x720 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: mrseg and tests.model's builders
from predict_setup import parse_sizes, photos  # noqa: E402 - benchmarks/ is on sys.path as a script

from mrseg.engine.predict.predictor import Predictor  # noqa: E402
from mrseg.model.coco_classes import coco_label_classes, coco_person_classes  # noqa: E402
from tests.model.conftest import build_ours_from, build_torchvision_detector  # noqa: E402

ARCHS = {"keypoint": "r50-fpn-kp", "faster": "r50-fpn-box"}


def run_kind(kind: str, images: list[tuple[str, np.ndarray]], rounds: int, score: float) -> dict:
    tv = build_torchvision_detector(kind)
    ours = build_ours_from(tv, ARCHS[kind])
    classes = coco_person_classes() if kind == "keypoint" else coco_label_classes()
    predictor = Predictor(model=ours, model_classes=classes, device="cpu", score=score)
    times = {"mrseg": 0.0, "torchvision": 0.0}
    box_diff = kp_diff = 0.0
    count = 0
    for r in range(rounds + 1):  # round 0 warms both up and is not timed
        for _, rgb in images:
            start = time.perf_counter()
            with torch.inference_mode():
                (ref,) = tv([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255])
            ref = {k: v.numpy() for k, v in ref.items()}
            mid = time.perf_counter()
            det = predictor(rgb)
            end = time.perf_counter()
            if r:
                times["torchvision"] += mid - start
                times["mrseg"] += end - mid
                count += 1
            keep = ref["scores"] >= score
            if len(det) == int(keep.sum()):
                box_diff = max(box_diff, float(np.abs(det.boxes - ref["boxes"][keep]).max(initial=0)))
                if det.keypoints is not None:
                    diff = np.abs(det.keypoints[..., :2] - ref["keypoints"][keep][..., :2])
                    kp_diff = max(kp_diff, float(diff.max(initial=0)))
    return {"images": count, **times, "box_diff": box_diff, "kp_diff": kp_diff, "detections": len(det)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=tuple(ARCHS), default=list(ARCHS))
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--size", type=parse_sizes, default=((640, 480),), help="WxH (default 640x480)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes (after a warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--score", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = photos(args.photos, args.size)
    print(
        f"{len(images)} photos ({', '.join(f'{w}x{h}' for w, h in args.size)}), {args.rounds} timed rounds, "
        f"CPU, {torch.get_num_threads()} threads, score >= {args.score}"
    )
    for kind in args.kinds:
        r = run_kind(kind, images, args.rounds, args.score)
        ours, theirs = r["images"] / r["mrseg"], r["images"] / r["torchvision"]
        kp = f", keypoints {r['kp_diff']:.2g} px" if kind == "keypoint" else ""
        print(
            f"RESULT {ARCHS[kind]:<12} mrseg {ours:6.3f} images/s  torchvision {theirs:6.3f} images/s  "
            f"ratio {ours / theirs:4.2f}x  (max diff: boxes {r['box_diff']:.2g} px{kp}; "
            f"{r['detections']} detections on the last photo)"
        )


if __name__ == "__main__":
    main()
