"""Parity between torchvision's detections and ours, for benchmarks/predict.py.

Strict (fp32 against fp32): `Parity`, the same detections in the same order up to float rounding.
Autocast (issue 7's criteria): `AutocastParity`, our detections against torchvision's fp32 ones: every
reference detection matched (same label, box IoU >= 0.9), mask IoU >= 0.98 for matched pairs, and COCO box AP
(pycocotools) of ours with the reference taken as ground truth ~1.0.
Both work on in-memory detections (model mode) or on two annotations.json files (cli mode).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrseg.engine.predict.tracker import box_iou
from mrseg.model.postprocess import _paste_boxes

BOX_TOL, SCORE_TOL, IOU_MIN = 1e-2, 1e-4, 0.99
MATCH_BOX_IOU, AUTOCAST_MASK_IOU, AUTOCAST_AP_MIN = 0.9, 0.98, 0.99


def mask_iou(a: np.ndarray, b: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of two bool masks [H, W], leaving out the pixels of `ignore`; 1.0 when both are empty."""
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
    """Worst differences over all images between torchvision's detections and ours (fp32 against fp32)."""

    def __init__(self):
        self.box = self.score = 0.0
        self.iou = self.iou_no_ties = 1.0
        self.detections = self.swaps = 0
        self.failures: list[str] = []
        self.window_shifts = 0  # pairs whose integer paste windows differ by a pixel
        self.iou_same_window = 1.0  # min mask IoU over the pairs pasted into the same window
        self.flip_margin = 0.0  # the largest |p - 0.5| of torchvision's at a pixel where the two masks differ
        self.worst = ""

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
                iou = mask_iou(det.masks[j], tv_masks[i])
                grown = _paste_boxes(torch.from_numpy(np.stack((tv_boxes[i], det.boxes[j]))).float(), 28, 1)
                if not torch.equal(grown[0], grown[1]):
                    # boxes within BOX_TOL whose paste windows round to different pixels: the whole mask moves
                    self.window_shifts += 1
                    self.iou_same_window = min(self.iou_same_window, 1.0)
                else:
                    self.iou_same_window = min(self.iou_same_window, iou)
                if iou < self.iou:
                    x1, y1, x2, y2 = tv_boxes[i]
                    self.worst = (
                        f"{name} #{i}: box {x2 - x1:.1f}x{y2 - y1:.1f} px, mask area torchvision "
                        f"{int(tv_masks[i].sum())} ours {int(det.masks[j].sum())}"
                    )
                self.iou = min(self.iou, iou)
                flips = det.masks[j] != tv_masks[i]
                if flips.any():
                    self.flip_margin = max(self.flip_margin, float(np.abs(tv_probs[i][flips] - 0.5).max()))
                # pixels whose probability is a float tie with the threshold round either way
                ties = np.abs(tv_probs[i] - 0.5) <= 1e-6
                self.iou_no_ties = min(self.iou_no_ties, mask_iou(det.masks[j], tv_masks[i], ties))

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
            f"{self.swaps} near-tie swaps{extra}); differing mask pixels lie within "
            f"{self.flip_margin:.1e} of p = 0.5; lowest-IoU pair: {self.worst or '-'}; "
            f"{self.window_shifts} pairs pasted one pixel apart (box rounding), min mask IoU of the others "
            f"{self.iou_same_window:.4f}"
        )


def match_detections(ref_boxes, ref_scores, ref_labels, boxes, labels, min_iou: float = MATCH_BOX_IOU):
    """Greedy one-to-one matching, reference detections in descending score order, each to the unmatched one
    of ours with the same label and the highest box IoU, if that IoU is >= `min_iou`.
    Boxes xyxy [N, 4] / [M, 4]; returns [(reference index, our index)]."""
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    if len(ref_labels) == 0 or len(labels) == 0:
        return []
    iou = box_iou(ref_boxes, boxes)
    iou[ref_labels[:, None] != labels[None, :]] = -1.0
    used = np.zeros(len(labels), dtype=bool)
    pairs = []
    for i in np.argsort(-np.asarray(ref_scores, np.float64), kind="stable"):
        candidates = np.where(used, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= min_iou:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def coco_box_ap(gt: list[dict], dt: list[dict], image_ids: list[int]) -> tuple[float, float]:
    """(AP, AP50) from pycocotools' COCOeval (bbox) of detections `dt` (image_id, category_id, bbox xywh,
    score) against ground truth `gt` (the same plus id >= 1, area, iscrowd). nan without ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt:
        return float("nan"), float("nan")
    if not dt:
        return 0.0, 0.0
    categories = sorted({a["category_id"] for a in gt} | {d["category_id"] for d in dt})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO()
        coco.dataset = {
            "images": [{"id": i} for i in image_ids],
            "annotations": gt,
            "categories": [{"id": c, "name": str(c)} for c in categories],
        }
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes([dict(d) for d in dt]), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


class AutocastParity:
    """Issue 7's autocast criteria over all images: our detections against a reference (torchvision's fp32
    detections): every reference detection matched (same label, box IoU >= MATCH_BOX_IOU), mask IoU of
    matched pairs >= AUTOCAST_MASK_IOU, and COCO box AP of ours with the reference as ground truth
    >= AUTOCAST_AP_MIN."""

    def __init__(self):
        self.gt: list[dict] = []
        self.dt: list[dict] = []
        self.image_ids: list[int] = []
        self.reference = self.ours = self.matched = self.unmatched_high = 0
        self.ious: list[float] = []

    def add(self, ref_boxes, ref_scores, ref_labels, boxes, scores, labels, mask_iou: Callable) -> None:
        """One image: boxes xyxy [N, 4] (reference) / [M, 4] (ours), scores, labels;
        mask_iou(i, j): IoU of reference mask i and our mask j."""
        image_id = len(self.image_ids) + 1
        self.image_ids.append(image_id)
        ref_boxes = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        pairs = match_detections(ref_boxes, ref_scores, ref_labels, boxes, labels)
        matched = {i for i, _ in pairs}
        self.reference += len(ref_boxes)
        self.ours += len(boxes)
        self.matched += len(pairs)
        self.unmatched_high += sum(
            1 for i in range(len(ref_boxes)) if i not in matched and ref_scores[i] >= 0.5
        )
        self.ious.extend(mask_iou(i, j) for i, j in pairs)
        for box, label in zip(ref_boxes, ref_labels, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            self.gt.append(
                {
                    "id": len(self.gt) + 1,  # pycocotools takes id 0 for "unmatched"
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(boxes, scores, labels, strict=True):
            self.dt.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )

    def box_ap(self) -> tuple[float, float]:
        return coco_box_ap(self.gt, self.dt, self.image_ids)

    def verdict(self) -> tuple[bool, float, float]:
        ap, ap50 = self.box_ap()
        ok = (
            self.matched == self.reference
            and (not self.ious or min(self.ious) >= AUTOCAST_MASK_IOU)
            and ap >= AUTOCAST_AP_MIN
        )
        return ok, ap, ap50

    def line(self) -> str:
        ok, ap, ap50 = self.verdict()
        below = sum(iou < AUTOCAST_MASK_IOU for iou in self.ious)
        ious = (
            f"min {min(self.ious):.4f} mean {statistics.fmean(self.ious):.4f}, {below} pairs "
            f"< {AUTOCAST_MASK_IOU}"
            if self.ious
            else "no pairs"
        )
        return (
            f"autocast parity vs torchvision fp32: {'KEEPS DETECTIONS' if ok else 'CHANGES DETECTIONS'} "
            f"(matched {self.matched}/{self.reference} reference detections with the same label and box IoU "
            f">= {MATCH_BOX_IOU} ({self.reference - self.matched} unmatched, {self.unmatched_high} of them "
            f"scoring >= 0.5; ours {self.ours} detections); mask IoU of matched pairs {ious}; "
            f"box AP of ours with the reference as ground truth: AP {ap:.4f}, AP50 {ap50:.4f} "
            f"(AP >= {AUTOCAST_AP_MIN}))"
        )



# ------------------------------------------------------------------------------------ annotation files


def _annotations_by_file(ours: Path, theirs: Path):
    """Yields (file name, our annotations, their annotations) for each image of our annotations.json."""
    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    by_name = {im["file_name"]: im["id"] for im in b["images"]}
    theirs_by_image: dict[int, list] = {}
    for ann in b["annotations"]:
        theirs_by_image.setdefault(ann["image_id"], []).append(ann)
    ours_by_image: dict[int, list] = {}
    for ann in a["annotations"]:
        ours_by_image.setdefault(ann["image_id"], []).append(ann)
    for im in a["images"]:
        theirs_of_image = theirs_by_image.get(by_name[im["file_name"]], [])
        yield im["file_name"], ours_by_image.get(im["id"], []), theirs_of_image


def _rle(ann: dict) -> dict:
    r = dict(ann["segmentation"])
    r["counts"] = r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]
    return r


def compare_annotation_files(ours: Path, theirs: Path) -> Parity:
    from pycocotools import mask as mask_util

    parity = Parity()
    for file_name, mine, other in _annotations_by_file(ours, theirs):
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
            parity.failures.append(f"{file_name}: {len(mine)} vs {len(other)} annotations")
            continue
        parity.detections += len(pairing)
        parity.swaps += swaps
        for i, j in enumerate(pairing):
            x, y = mine[j], other[i]
            if x["category_id"] != y["category_id"]:
                parity.failures.append(f"{file_name}: categories differ")
            parity.box = max(parity.box, max(abs(p - q) for p, q in zip(x["bbox"], y["bbox"], strict=True)))
            parity.score = max(parity.score, abs(x["score"] - y["score"]))
            parity.iou = min(parity.iou, float(mask_util.iou([_rle(x)], [_rle(y)], [0])[0][0]))
    parity.iou_no_ties = parity.iou  # no probabilities in the files
    parity.box = max(0.0, parity.box - 0.01)  # both files round boxes to 0.01 px: the part beyond that
    return parity


def compare_annotation_files_autocast(ours: Path, reference: Path) -> AutocastParity:
    """Issue 7's autocast criteria between our annotations.json and the fp32 torchvision loop's."""
    from pycocotools import mask as mask_util

    parity = AutocastParity()

    def xyxy(rs):
        b = np.array([r["bbox"] for r in rs], dtype=np.float64).reshape(-1, 4)
        b[:, 2:] += b[:, :2]
        return b

    for _, mine, other in _annotations_by_file(ours, reference):
        parity.add(
            xyxy(other),
            [r["score"] for r in other],
            [r["category_id"] for r in other],
            xyxy(mine),
            [r["score"] for r in mine],
            [r["category_id"] for r in mine],
            lambda i, j, mine=mine, other=other: float(
                mask_util.iou([_rle(mine[j])], [_rle(other[i])], [0])[0][0]
            ),
        )
    return parity


