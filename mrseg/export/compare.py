"""Detections of an exported model against PyTorch's: matched boxes within a pixel tolerance, scores, mask
IoU, keypoints within a pixel tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Comparison:
    """Over the detections scoring at least `score` in the PyTorch result."""

    score: float
    reference: int  # PyTorch detections at >= score
    exported: int  # exported-model detections at >= score
    matched: int  # reference detections with a same-label exported one within box_tol
    max_box_diff: float  # px, over matched pairs
    min_mask_iou: float  # over matched pairs (1.0 when none)
    max_prob_diff: float  # max |28x28 mask probability difference| over matched pairs (0.0 without probs)
    box_tol: float
    min_iou: float
    prob_tol: float = 1e-4
    max_score_diff: float = 0.0  # over matched pairs
    max_keypoint_diff: float = 0.0  # px, max |x| or |y| difference over matched pairs' keypoints
    max_keypoint_score_diff: float = 0.0  # over matched pairs' keypoints
    score_tol: float = 1e-4
    keypoint_tol: float = 0.5
    keypoint_score_tol: float = 1e-3

    @property
    def ok(self) -> bool:
        """Same detections, boxes within box_tol, scores within score_tol, masks with IoU >= min_iou,
        keypoints within keypoint_tol px and their scores within keypoint_score_tol. A lower mask IoU still
        passes when the mask probabilities agree within prob_tol: then only pixels at the threshold flipped
        (frequent with random weights, whose probabilities sit near 0.5; a few flips weigh a lot in a small
        mask)."""
        masks_ok = self.min_mask_iou >= self.min_iou or self.max_prob_diff <= self.prob_tol
        keypoints_ok = (
            self.max_keypoint_diff <= self.keypoint_tol
            and self.max_keypoint_score_diff <= self.keypoint_score_tol
        )
        return (
            self.matched == self.reference == self.exported
            and self.max_box_diff <= self.box_tol
            and self.max_score_diff <= self.score_tol
            and masks_ok
            and keypoints_ok
        )


def compare_detections(
    reference: dict[str, Tensor],
    exported: dict[str, Tensor],
    score: float = 0.5,
    box_tol: float = 1e-2,
    min_iou: float = 0.99,
) -> Comparison:
    """Each reference detection at >= `score` is paired with the closest (max abs coordinate difference)
    unpaired exported detection of the same label. Detections within 1e-4 of `score` on the exported side
    count as above it, so that a score rounding across the threshold is not a mismatch."""
    ref_keep = torch.where(reference["scores"] >= score)[0]
    exp_keep = torch.where(exported["scores"] >= score - 1e-4)[0]
    used: set[int] = set()
    max_diff, min_iou_seen, max_prob_diff = 0.0, 1.0, 0.0
    max_score_diff, max_kp_diff, max_kp_score_diff = 0.0, 0.0, 0.0
    for i in ref_keep.tolist():
        best, best_diff = None, float("inf")
        for j in exp_keep.tolist():
            if j in used or int(exported["labels"][j]) != int(reference["labels"][i]):
                continue
            diff = (exported["boxes"][j] - reference["boxes"][i]).abs().max().item()
            if diff < best_diff:
                best, best_diff = j, diff
        if best is None or best_diff > box_tol:
            continue
        used.add(best)  # one per matched reference detection
        max_diff = max(max_diff, best_diff)
        if "masks" in reference and "masks" in exported:
            a, b = reference["masks"][i], exported["masks"][best]
            union = (a | b).sum().item()
            min_iou_seen = min(min_iou_seen, 1.0 if union == 0 else (a & b).sum().item() / union)
        max_score_diff = max(
            max_score_diff, abs(float(reference["scores"][i]) - float(exported["scores"][best]))
        )
        if "keypoints" in reference and "keypoints" in exported:
            diff = (reference["keypoints"][i, :, :2] - exported["keypoints"][best, :, :2]).abs().max().item()
            max_kp_diff = max(max_kp_diff, diff)
            diff = (reference["keypoints_scores"][i] - exported["keypoints_scores"][best]).abs().max().item()
            max_kp_score_diff = max(max_kp_score_diff, diff)
        if "mask_probs" in reference and "mask_probs" in exported:
            diff = (reference["mask_probs"][i] - exported["mask_probs"][best]).abs().max().item()
            max_prob_diff = max(max_prob_diff, diff)
    n_exported = int((exported["scores"] >= score).sum()) + sum(
        1 for j in used if float(exported["scores"][j]) < score
    )
    return Comparison(
        score,
        len(ref_keep),
        n_exported,
        len(used),
        max_diff,
        min_iou_seen,
        max_prob_diff,
        box_tol,
        min_iou,
        max_score_diff=max_score_diff,
        max_keypoint_diff=max_kp_diff,
        max_keypoint_score_diff=max_kp_score_diff,
    )
