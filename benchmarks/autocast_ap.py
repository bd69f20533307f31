"""Does autocast keep a trained model's detections? fp32 against `--precision` (bf16 / fp16) on a COCO set.

Random weights can't answer this: their ~100 detections an image have nearly equal scores, so any rounding
reorders them (see benchmarks/README.md). This script takes a trained checkpoint and its labelled images and
runs our `Predictor` twice over them, at fp32 and at `--precision`, interleaved image by image:

- COCO box and mask AP of each against the ground truth (pycocotools, via `mrseg.engine.evaluate.evaluator`):
  issue 7's "box AP unchanged";
- the detections of the low precision against the fp32 ones: fp32 detections matched (same label, box IoU
  >= 0.9) and the mask IoU of matched pairs (issue 7's >= 0.98), from `predict_parity.AutocastParity`;
- images/s of each (model and mask paste; no writing).

    python examples/demo.py --out /tmp/demo          # trains the demo model (or use any mrseg checkpoint)
    python benchmarks/autocast_ap.py --weights /tmp/demo/train/best.pt \\
        --coco /tmp/demo/data/val.json --images /tmp/demo/data/val --precision bf16
    python benchmarks/autocast_ap.py --weights coco-r50-fpn --coco instances_val2017.json \\
        --images val2017 --device cuda --precision fp16 --limit 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_parity import AutocastParity, mask_iou  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _results(det, img_id: int, mapping: dict[int, int], classes) -> list[dict]:
    from mrseg.outputs.records import instance_records

    out = []
    for rec in instance_records(det, classes, mask_format="rle"):
        if rec["label"] in mapping:
            out.append({"image_id": img_id, "category_id": mapping[rec["label"]], "bbox": rec["bbox"],
                        "score": rec["score"], "segmentation": rec["segmentation"]})  # fmt: skip
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="zoo name or checkpoint (a trained model)")
    parser.add_argument("--arch", default=None, help="architecture of a bare state dict")
    parser.add_argument("--coco", required=True, help="COCO ground truth JSON")
    parser.add_argument("--images", required=True, help="folder of the ground truth's images")
    parser.add_argument("--precision", choices=("fp16", "bf16"), default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score", type=float, default=0.05, help="score threshold (COCO evaluation: low)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)

    from mrseg.data.images import read_image
    from mrseg.engine.evaluate.evaluator import class_mapping, evaluate, image_paths, load_ground_truth
    from mrseg.engine.predict.predictor import Predictor

    gt = load_ground_truth(args.coco)
    paths = list(image_paths(gt, args.images).items())[: args.limit]
    device = torch.device(args.device)
    predictors = {
        p: Predictor(weights=args.weights, arch=args.arch, device=device, score=args.score, precision=p,
                     mask_crops=True)  # fmt: skip
        for p in ("fp32", args.precision)
    }
    classes = predictors["fp32"].classes
    mapping = class_mapping(classes, gt)
    results = {p: [] for p in predictors}
    seconds = dict.fromkeys(predictors, 0.0)
    parity = AutocastParity()
    images = [(img_id, torch.from_numpy(read_image(path))) for img_id, path in paths]
    for p in predictors.values():  # warm-up
        p.infer([images[0][1]])
    for n, (img_id, image) in enumerate(images):
        order = list(predictors) if n % 2 == 0 else list(reversed(predictors))
        dets = {}
        for name in order:
            _sync(device)
            start = time.perf_counter()
            (dets[name],) = predictors[name].infer([image])
            _sync(device)
            seconds[name] += time.perf_counter() - start
            results[name] += _results(dets[name], img_id, mapping, classes)
        ref, low = dets["fp32"], dets[args.precision]
        parity.add(ref.boxes, ref.scores, ref.labels, low.boxes, low.scores, low.labels,
                   lambda i, j, a=ref, b=low: _mask_iou(a.masks, i, b.masks, j))  # fmt: skip
    img_ids = [i for i, _ in images]
    print(f"{args.weights}: {len(images)} images of {args.coco}, device {device}, score >= {args.score}")
    print(f"{'':<6} {'box AP':>8} {'mask AP':>8} {'images/s':>9}")
    for name in predictors:
        ap = evaluate(gt, results[name], img_ids=img_ids) if results[name] else {}
        box, mask = (ap.get(t, {}).get("AP", float("nan")) for t in ("bbox", "segm"))
        print(f"{name:<6} {box:8.4f} {mask:8.4f} {len(images) / seconds[name]:9.3f}")
    print(parity.line().replace("vs torchvision fp32", f"{args.precision} vs our fp32"))
    ratio = seconds["fp32"] / seconds[args.precision]
    print(f"RESULT autocast {args.precision}: {ratio:.2f}x fp32's images/s")


def _mask_iou(a, i: int, b, j: int) -> float:
    """IoU of mask i of `a` and mask j of `b` (CroppedMasks), compared over their crops' common bounds."""
    ma, mb = a.crop(i), b.crop(j)
    x0, y0 = min(ma.x0, mb.x0), min(ma.y0, mb.y0)
    x1, y1 = max(ma.bounds[2], mb.bounds[2]), max(ma.bounds[3], mb.bounds[3])
    return mask_iou(ma.window(x0, y0, x1, y1), mb.window(x0, y0, x1, y1))


if __name__ == "__main__":
    main()
