"""Predict speed: mrseg's Mask R-CNN against torchvision's `maskrcnn_resnet50_fpn` with identical weights, in
one process and one run, on the same real photographs (scikit-image's, resized to 640x480 and 1280x720).

Weights: torchvision's R50-FPN with seeded random weights whose frozen BatchNorm statistics are calibrated on
the benchmark photos (each layer's mean / variance of its input, so activations are scaled like a trained
network's; `--raw-norms` keeps tests/model's random statistics instead), class biases raised so that ~100
detections pass the 0.05 score threshold (as tests/model does); ours gets them through our key converter.

    python benchmarks/predict.py                       # model: per-stage times, images/s, parity, peak RSS
    python benchmarks/predict.py --mode cli            # `mrseg predict DIR` vs a plain torchvision loop
    python benchmarks/predict.py --arch r18-fpn r34-fpn --no-rss   # light models, ours alone
    python benchmarks/predict.py --device cuda --amp   # GPU (autocast fp16 on both models)

Model mode times each image through both models, interleaved (ours / torchvision alternate who goes first),
after one warm-up each, and reports medians per stage: preprocess (uint8 -> float, resize, normalise, batch),
backbone, RPN, RoI heads, mask paste (to full-size binary masks), writing (masks -> COCO RLE + JSON), plus
images/s from the summed per-image totals and the ratio ours / torchvision (> 1: ours is faster). Ours runs
as `mrseg predict` runs it: through `Predictor` (BatchNorm folded, channels_last, inference_mode).
Parity: same number of detections, labels in the same order, boxes within 1e-2 px, scores within 1e-4, mask
IoU >= 0.99 (a pair of detections whose scores differ by less than 1e-4 may come out swapped; the check pairs
them and counts such swaps). Peak RSS: each model alone in a child process predicting 1066x800 photos.

CLI mode writes the photos as JPEGs into a temporary folder and the weights into a state-dict file, then runs,
each as its own process and alternately, `python -m mrseg predict DIR --weights W --arch r50-fpn --format coco
--mask-format rle --score 0` and a straightforward torchvision loop (torchvision.io decode, model, pycocotools
RLE, annotations.json); wall time includes start-up and model loading for both. The two annotations.json
files are compared with the same tolerances (boxes are rounded to 0.01 px in both files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

SIZES = ((640, 480), (1280, 720))
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry", "hubble_deep_field")
STAGES = ("preprocess", "backbone", "rpn", "roi_heads", "paste", "other", "write")
BOX_TOL, SCORE_TOL, IOU_MIN = 1e-2, 1e-4, 0.99


# ---------------------------------------------------------------------------------------------- inputs


def photos(count: int, sizes=SIZES) -> list[tuple[str, np.ndarray]]:
    """`count` scikit-image photographs, each resized to every size: [(name, RGB uint8 [H, W, 3])]."""
    from skimage import data

    out = []
    for name in PHOTOS[:count]:
        rgb = np.ascontiguousarray(getattr(data, name)()[..., :3])
        for w, h in sizes:
            out.append((f"{name}_{w}x{h}", cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)))
    return out


def as_float(rgb: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in 0..1 on `device` (what a torchvision user writes)."""
    t = torch.as_tensor(rgb).to(device)
    return t.permute(2, 0, 1).float().div(255.0)


# --------------------------------------------------------------------------------------------- weights


@torch.no_grad()
def calibrate_norms(model: nn.Module, images: list[torch.Tensor]) -> None:
    """Sets every FrozenBatchNorm2d's statistics to those of its input on `images` (in forward order)."""
    from torchvision.ops import FrozenBatchNorm2d

    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    batch = model.transform(images)[0]
    try:
        model.backbone(getattr(batch, "tensors", batch))  # torchvision's ImageList or our tensor
    finally:
        for h in handles:
            h.remove()


def torchvision_r50_fpn() -> nn.Module:
    """torchvision's maskrcnn_resnet50_fpn as it is built for its COCO weights (FrozenBatchNorm2d, res3..res5
    trainable), 91 labels, random weights, eval mode."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=91).eval()


def torchvision_model(calibrate_on: list[torch.Tensor] | None, seed: int = 0) -> nn.Module:
    """torchvision_r50_fpn with seeded random weights giving ~100 detections an image."""
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(seed)
    model = torchvision_r50_fpn()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():  # tests/model's random statistics and affine parameters
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.shape[0]
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.05 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.05 * torch.randn(n, generator=g))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
        if calibrate_on:
            calibrate_norms(model, calibrate_on)
        model.roi_heads.box_predictor.cls_score.bias[[1, 3, 18]] += 6.0
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(30.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(-1.0)
    return model


def our_model(tv_state: dict | None, arch: str = "r50-fpn", calibrate_on=None, seed: int = 0) -> nn.Module:
    """Ours: `arch` with torchvision's weights through our converter, or (light archs) seeded random weights
    prepared the same way (norms calibrated, class biases raised)."""
    from mrseg.model.zoo import build_model, load_state_dict

    torch.manual_seed(seed)
    model = build_model(arch, 90, aligned=False if tv_state is not None else None)
    if tv_state is not None:
        load_state_dict(model, tv_state, "torchvision model")
    else:
        model.eval()
        if calibrate_on:
            calibrate_norms(model, calibrate_on)
        with torch.no_grad():
            model.roi_heads.box_predictor.cls_score.bias[[1, 3, 18]] += 6.0
            model.roi_heads.mask_head.predictor.weight.mul_(30.0)
            model.roi_heads.mask_head.predictor.bias.fill_(-1.0)
    return model.eval()


# ------------------------------------------------------------------------------------------ stage timer


class StageTimer:
    """Times the stages of one model call with hooks on its backbone / rpn / roi_heads modules and a
    wrapper around its paste-back method; `cuda` synchronises at each boundary."""

    def __init__(self, model: nn.Module, postprocess_owner, cuda: bool):
        self.cuda = cuda
        self.marks: dict[str, float] = {}
        self.paste = 0.0
        for name in ("backbone", "rpn", "roi_heads"):
            module = getattr(model, name)
            module.register_forward_pre_hook(lambda m, a, n=name: self._mark(n + "_start"))
            module.register_forward_hook(lambda m, a, o, n=name: self._mark(n + "_end"))
        original = postprocess_owner.postprocess

        def timed(*args, **kwargs):
            start = self.now()
            out = original(*args, **kwargs)
            self.paste += self.now() - start
            return out

        postprocess_owner.postprocess = timed

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _mark(self, key: str) -> None:
        self.marks[key] = self.now()

    def start(self) -> None:
        self.marks, self.paste = {}, 0.0
        self.marks["start"] = self.now()

    def stop(self, write_seconds: float, end: float) -> dict[str, float]:
        m = self.marks
        t = {
            "preprocess": m["backbone_start"] - m["start"],
            "backbone": m["backbone_end"] - m["backbone_start"],
            "rpn": m["rpn_end"] - m["rpn_start"],
            "roi_heads": m["roi_heads_end"] - m["roi_heads_start"],
            "paste": self.paste,
        }
        t["other"] = (end - m["start"]) - sum(t.values())  # between stages, results to numpy
        t["write"] = write_seconds
        t["total"] = end - m["start"] + write_seconds
        return t


# ------------------------------------------------------------------------------------------- writing


def torchvision_records(out: dict, image_id: int) -> list[dict]:
    """The straightforward conversion: full-image binary masks -> pycocotools RLE, COCO annotation dicts."""
    from pycocotools import mask as mask_util

    masks = (out["masks"][:, 0] > 0.5).cpu().numpy()
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_util.area(rles)
    records = []
    for i, (box, score, label) in enumerate(
        zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True)
    ):
        rle = rles[i]
        records.append(
            {
                "image_id": image_id,
                "bbox": [
                    round(box[0], 2),
                    round(box[1], 2),
                    round(box[2] - box[0], 2),
                    round(box[3] - box[1], 2),
                ],
                "score": round(score, 5),
                "category_id": int(label),
                "area": int(areas[i]),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
            }
        )
    return records


# -------------------------------------------------------------------------------------------- parity


def _mask_iou(a: np.ndarray, b: np.ndarray, ignore: np.ndarray | None = None) -> float:
    if ignore is not None:
        a, b = a & ~ignore, b & ~ignore
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def pair_detections(
    tv_scores, tv_labels, tv_boxes, scores, labels, boxes, box_tol: float = BOX_TOL
) -> tuple[list[int] | None, int]:
    """For each of torchvision's detections, the index of ours that matches it: the same index, or (a swap of
    near-tied scores) another of ours with a score within SCORE_TOL, the same label and a box within
    BOX_TOL. Returns (pairing or None when the counts differ, number of swapped detections)."""
    n = len(tv_scores)
    if len(scores) != n:
        return None, 0
    pairing, used, swaps = [], set(), 0

    def fits(i, j):
        return (
            labels[j] == tv_labels[i]
            and abs(scores[j] - tv_scores[i]) <= SCORE_TOL
            and np.abs(boxes[j] - tv_boxes[i]).max() <= box_tol
        )

    for i in range(n):
        j = i
        if i in used or not fits(i, i):  # a near-tied neighbour may have taken this place
            j = next((k for k in range(max(0, i - 5), min(n, i + 6)) if k not in used and fits(i, k)), i)
            swaps += j != i
        used.add(j)
        pairing.append(j)
    return pairing, swaps


class Parity:
    """Worst differences over all images between torchvision's detections and ours."""

    def __init__(self):
        self.box = self.score = 0.0
        self.iou = self.iou_no_ties = 1.0
        self.detections = self.swaps = 0
        self.failures: list[str] = []

    def add(self, name: str, tv_out: dict, tv_probs: np.ndarray, det) -> None:
        """tv_probs: torchvision's pasted mask probabilities [N, H, W] (its masks are those > 0.5)."""
        tv_masks = tv_probs > 0.5
        tv_boxes, tv_scores = tv_out["boxes"].float().cpu().numpy(), tv_out["scores"].float().cpu().numpy()
        tv_labels = tv_out["labels"].cpu().numpy()
        pairing, swaps = pair_detections(tv_scores, tv_labels, tv_boxes, det.scores, det.labels, det.boxes)
        if pairing is None:
            self.failures.append(f"{name}: {len(det.scores)} detections, torchvision {len(tv_scores)}")
            return
        self.swaps += swaps
        self.detections += len(pairing)
        if not np.array_equal(det.labels[pairing], tv_labels):
            self.failures.append(f"{name}: labels differ")
        if pairing:
            self.box = max(self.box, float(np.abs(det.boxes[pairing] - tv_boxes).max()))
            self.score = max(self.score, float(np.abs(det.scores[pairing] - tv_scores).max()))
            for i, j in enumerate(pairing):
                self.iou = min(self.iou, _mask_iou(det.masks[j], tv_masks[i]))
                # pixels whose probability is a float tie with the threshold round either way
                ties = np.abs(tv_probs[i] - 0.5) <= 1e-6
                self.iou_no_ties = min(self.iou_no_ties, _mask_iou(det.masks[j], tv_masks[i], ties))

    @property
    def ok(self) -> bool:
        return not self.failures and self.box <= BOX_TOL and self.score <= SCORE_TOL and self.iou >= IOU_MIN

    @property
    def ok_but_ties(self) -> bool:
        return (
            not self.failures
            and self.box <= BOX_TOL
            and self.score <= SCORE_TOL
            and self.iou_no_ties >= IOU_MIN
        )

    def line(self) -> str:
        verdict = "SAME" if self.ok else "DIFFERENT"
        if not self.ok and self.ok_but_ties:
            verdict = "SAME except pixels at p = 0.5 float ties"
        extra = f"; {'; '.join(self.failures[:3])}" if self.failures else ""
        return (
            f"parity: {verdict} ({self.detections} detections; max |box diff| {self.box:.2e} px "
            f"(<= {BOX_TOL}), max |score diff| {self.score:.2e} (<= {SCORE_TOL}), "
            f"min mask IoU {self.iou:.4f} (>= {IOU_MIN}; {self.iou_no_ties:.4f} without pixels at "
            "p = 0.5 +- 1e-6), "
            f"{self.swaps} near-tie swaps{extra})"
        )


# ------------------------------------------------------------------------------------------ model mode


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16) if amp else nullcontext()


def run_ours(predictor, timer: StageTimer, rgb: np.ndarray, classes, amp: bool):
    from mrseg.outputs.records import instance_records

    timer.start()
    with _autocast(predictor.device, amp):
        (det,) = predictor.infer([torch.from_numpy(rgb)])
    end = timer.now()
    start = time.perf_counter()
    json.dumps(instance_records(det, classes, mask_format="rle"))
    return det, timer.stop(time.perf_counter() - start, end)


def run_torchvision(model, timer: StageTimer, rgb: np.ndarray, device: torch.device, amp: bool):
    timer.start()
    with torch.inference_mode(), _autocast(device, amp):
        (out,) = model([as_float(rgb, device)])
        tv_probs = out["masks"][:, 0].float().cpu().numpy()
    end = timer.now()
    start = time.perf_counter()
    json.dumps(torchvision_records(out, 0))
    return out, tv_probs, timer.stop(time.perf_counter() - start, end)


def print_table(columns: dict[str, list[dict]], count: int) -> dict[str, float]:
    names = list(columns)
    header = f"{'stage (median ms)':<20}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        header += f"{'ratio':>10}"
    print(header)
    rates = {}
    for stage in (*STAGES, "total"):
        meds = [1000 * statistics.median(t[stage] for t in columns[n]) for n in names]
        row = f"{stage:<20}" + "".join(f"{m:>14.1f}" for m in meds)
        if len(names) == 2:
            row += f"{meds[1] / meds[0]:>10.2f}" if meds[0] > 0.05 else f"{'-':>10}"
        print(row)
    for n in names:
        rates[n] = count / sum(t["total"] for t in columns[n])
    print(
        f"{'images/s':<20}"
        + "".join(f"{rates[n]:>14.3f}" for n in names)
        + (f"{rates[names[0]] / rates[names[1]]:>10.2f}" if len(names) == 2 else "")
    )
    return rates


def model_mode(args) -> dict[str, dict[str, dict]]:
    """Prints the tables; returns {arch: {'mrseg': state dict, ['torchvision': state dict]}} for peak_rss."""
    from mrseg.engine.predictor import Predictor
    from mrseg.model.coco_classes import coco_label_classes

    device = torch.device(args.device)
    images = photos(args.photos) * args.repeats
    calib = None if args.raw_norms else [as_float(rgb, torch.device("cpu")) for _, rgb in photos(args.photos)]
    classes = coco_label_classes()
    cuda = device.type == "cuda"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        f"{' (amp fp16)' if args.amp else ''}; {len(images)} images "
        f"({', '.join(sorted({f'{r.shape[1]}x{r.shape[0]}' for _, r in images}))}), "
        "one run each after a warm-up"
    )
    tv = None
    states = {}
    for arch in args.arch:
        print(f"\n== {arch} ==")
        if arch == "r50-fpn":
            tv = torchvision_model(calib).to(device)
            ours = our_model(tv.state_dict(), arch)
        else:
            ours = our_model(None, arch, calibrate_on=calib)
        predictor = Predictor(
            model=ours, model_classes=classes, device=device, score=0.0, fuse=not args.no_fuse
        )
        our_timer = StageTimer(predictor.net, predictor.net, cuda)
        runs = {"mrseg": []}
        if arch == "r50-fpn":
            tv_timer = StageTimer(tv, tv.transform, cuda)
            runs["torchvision"] = []
        parity = Parity()
        run_ours(predictor, our_timer, images[0][1], classes, args.amp)  # warm-up
        if arch == "r50-fpn":
            run_torchvision(tv, tv_timer, images[0][1], device, args.amp)
        detections = []
        for k, (name, rgb) in enumerate(images):
            order = ("mrseg", "torchvision") if k % 2 == 0 else ("torchvision", "mrseg")
            for who in order:
                if who == "mrseg":
                    det, t = run_ours(predictor, our_timer, rgb, classes, args.amp)
                    runs["mrseg"].append(t)
                    detections.append(len(det))
                elif arch == "r50-fpn":
                    tv_out, tv_masks, t = run_torchvision(tv, tv_timer, rgb, device, args.amp)
                    runs["torchvision"].append(t)
            if arch == "r50-fpn":
                parity.add(name, tv_out, tv_masks, det)
        print(f"detections per image: {min(detections)}..{max(detections)}")
        states[arch] = {"mrseg": ours.state_dict()}
        if arch == "r50-fpn":
            states[arch]["torchvision"] = tv.state_dict()
        rates = print_table(runs, len(images))
        if arch == "r50-fpn":
            print(parity.line())
            print(f"RESULT {arch}: mrseg {rates['mrseg'] / rates['torchvision']:.2f}x torchvision's images/s")
        del predictor, ours
    return states


# -------------------------------------------------------------------------------------------- peak RSS


def rss_child(which: str, weights: str, arch: str, device: str) -> None:
    """Child process: one model alone, loaded from a weights file as `mrseg predict` / a torchvision user
    would, predicting 1066x800 photos (~100 detections each) to RLE records; prints its peak RSS."""
    from mrseg.engine.predictor import Predictor
    from mrseg.outputs.records import instance_records

    dev = torch.device(device)
    images = photos(2, sizes=((1066, 800),))
    if which == "torchvision":
        model = torchvision_r50_fpn()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.to(dev)
        for _, rgb in images:
            with torch.inference_mode():
                (out,) = model([as_float(rgb, dev)])
            json.dumps(torchvision_records(out, 0))
    else:
        predictor = Predictor(weights=weights, arch=arch, device=dev, score=0.0)
        for _, rgb in images:
            (det,) = predictor.infer([torch.from_numpy(rgb)])
            json.dumps(instance_records(det, predictor.classes, mask_format="rle"))
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the forking parent's over the exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(which: str, arch: str, state: dict, device: str) -> float:
    with tempfile.TemporaryDirectory(prefix="mrseg-bench-") as tmp:
        weights = Path(tmp) / "weights.pth"
        torch.save(state, weights)
        cmd = [sys.executable, __file__, "--child-rss", which, str(weights)]
        cmd += ["--arch", arch, "--device", device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


# -------------------------------------------------------------------------------------------- CLI mode


def torchvision_loop(folder: str, weights: str, out_dir: str, device: str) -> None:
    """Child process: the plain torchvision way over a folder, to OUT/annotations.json."""
    import torchvision

    dev = torch.device(device)
    model = torchvision_r50_fpn()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().to(dev)
    images, annotations = [], []
    for image_id, path in enumerate(sorted(Path(folder).glob("*.jpg")), start=1):
        image = torchvision.io.decode_image(str(path), mode=torchvision.io.ImageReadMode.RGB)
        with torch.inference_mode():
            (out,) = model([image.to(dev).float() / 255.0])
        images.append(
            {"id": image_id, "file_name": path.name, "height": image.shape[1], "width": image.shape[2]}
        )
        annotations.extend(torchvision_records(out, image_id))
    for i, a in enumerate(annotations, start=1):
        a["id"] = i
    categories = [{"id": i, "name": str(i)} for i in range(1, 91)]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / "annotations.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def compare_annotation_files(ours: Path, theirs: Path) -> Parity:
    from pycocotools import mask as mask_util

    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    parity = Parity()
    by_name = {im["file_name"]: im["id"] for im in b["images"]}
    theirs_by_image: dict[int, list] = {}
    for ann in b["annotations"]:
        theirs_by_image.setdefault(ann["image_id"], []).append(ann)
    ours_by_image: dict[int, list] = {}
    for ann in a["annotations"]:
        ours_by_image.setdefault(ann["image_id"], []).append(ann)
    for im in a["images"]:
        mine, other = ours_by_image.get(im["id"], []), theirs_by_image.get(by_name[im["file_name"]], [])
        arrays = [
            (
                np.array([r["score"] for r in rs], dtype=np.float64),
                np.array([r["category_id"] for r in rs]),
                np.array([r["bbox"] for r in rs], dtype=np.float64).reshape(-1, 4),
            )
            for rs in (other, mine)
        ]
        # both files round boxes to 0.01 px and scores to 1e-5
        pairing, swaps = pair_detections(*arrays[0], *arrays[1], box_tol=BOX_TOL + 0.01)
        if pairing is None:
            parity.failures.append(f"{im['file_name']}: {len(mine)} vs {len(other)} annotations")
            continue
        parity.detections += len(pairing)
        parity.swaps += swaps
        for i, j in enumerate(pairing):
            x, y = mine[j], other[i]
            if x["category_id"] != y["category_id"]:
                parity.failures.append(f"{im['file_name']}: categories differ")
            parity.box = max(parity.box, max(abs(p - q) for p, q in zip(x["bbox"], y["bbox"], strict=True)))
            parity.score = max(parity.score, abs(x["score"] - y["score"]))
            rx, ry = (dict(r["segmentation"]) for r in (x, y))
            for r in (rx, ry):
                r["counts"] = r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]
            parity.iou = min(parity.iou, float(mask_util.iou([rx], [ry], [0])[0][0]))
    parity.iou_no_ties = parity.iou  # no probabilities in the files
    parity.box = max(0.0, parity.box - 0.01)  # both files round boxes to 0.01 px: the part beyond that
    return parity


def cli_mode(args) -> None:
    device = args.device
    images = photos(args.photos)
    calib = [as_float(rgb, torch.device("cpu")) for _, rgb in images]
    with tempfile.TemporaryDirectory(prefix="mrseg-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for name, rgb in images:
            cv2.imwrite(
                str(folder / f"{name}.jpg"),
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
        weights = tmp / "weights.pth"
        torch.save(torchvision_model(None if args.raw_norms else calib).state_dict(), weights)
        ours_cmd = [
            sys.executable, "-m", "mrseg", "predict", str(folder), "--weights", str(weights),
            "--arch", "r50-fpn",
            "--format", "coco", "--mask-format", "rle", "--score", "0", "--device", device, "--quiet",
            "--exist-ok", "--workers", str(args.workers), "--out",
        ]  # fmt: skip
        tv_cmd = [
            sys.executable,
            __file__,
            "--child-tv-loop",
            str(folder),
            str(weights),
            "--device",
            device,
            "--out",
        ]
        times: dict[str, list[float]] = {"mrseg predict": [], "torchvision loop": []}
        print(
            f"{len(images)} JPEGs ({', '.join(f'{w}x{h}' for w, h in SIZES)}), device {device}, "
            f"mrseg --workers {args.workers}; {args.repeats} alternating run(s) each, "
            "wall time incl. start-up"
        )
        for r in range(args.repeats):
            order = (
                ("mrseg predict", "torchvision loop") if r % 2 == 0 else ("torchvision loop", "mrseg predict")
            )
            for who in order:
                cmd = (
                    (ours_cmd + [str(tmp / "ours")])
                    if who == "mrseg predict"
                    else (tv_cmd + [str(tmp / "tv")])
                )
                start = time.perf_counter()
                subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                times[who].append(time.perf_counter() - start)
        for who, ts in times.items():
            med = statistics.median(ts)
            print(
                f"{who:<18} {med:8.1f} s  {len(images) / med:7.3f} images/s  "
                f"(runs: {', '.join(f'{t:.1f}' for t in ts)})"
            )
        ratio = statistics.median(times["torchvision loop"]) / statistics.median(times["mrseg predict"])
        print(
            compare_annotation_files(
                tmp / "ours" / "annotations.json", tmp / "tv" / "annotations.json"
            ).line()
        )
        print(f"RESULT cli: mrseg predict {ratio:.2f}x the torchvision loop's images/s")


# ---------------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("model", "cli"), default="model")
    parser.add_argument(
        "--arch", nargs="+", default=["r50-fpn"], help="r50-fpn: against torchvision; others ours alone"
    )
    parser.add_argument("--photos", type=int, default=2, help="photographs (each at 640x480 and 1280x720)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the images (cli: runs of each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="autocast fp16 (cuda)")
    parser.add_argument("--workers", type=int, default=1, help="cli mode: mrseg predict --workers")
    parser.add_argument("--no-fuse", action="store_true", help="ours without BN folding / channels_last")
    parser.add_argument("--raw-norms", action="store_true", help="tests/model's random BN statistics")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--child-rss", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-tv-loop", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.amp and args.device == "cpu":
        parser.error("--amp needs --device cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.child_rss:
        return rss_child(*args.child_rss, args.arch[0], args.device)
    if args.child_tv_loop:
        return torchvision_loop(*args.child_tv_loop, args.out, args.device)
    if args.mode == "cli":
        return cli_mode(args)
    states = model_mode(args)
    if not args.no_rss:
        print("\npeak RSS, one model alone (child process) loading its weights file and predicting two")
        print("1066x800 photos (~100 detections each) to RLE records:")
        for arch, by_model in states.items():
            for which, state in by_model.items():
                print(f"  {which:<12} {arch:<9} {peak_rss(which, arch, state, args.device):8.0f} MB")


if __name__ == "__main__":
    main()
