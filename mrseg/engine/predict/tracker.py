"""Track ids for video frames: match each frame's instances to the previous frame's by IoU.

Matching is one-to-one (Hungarian assignment on IoU), only between instances of the same class and only
above `iou_threshold`; unmatched instances get new ids. Tracks live for `max_age` frames without a match,
so an object missed in one frame keeps its id when it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (xyxy) -> [N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of bool masks `a` [N, H, W] with `b` [M, H, W] -> [N, M]."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    track_id: int
    label: int
    box: np.ndarray
    mask: np.ndarray | None
    age: int = 0


class Tracker:
    """Assigns stable `track_id`s to the instances of consecutive frames of one video (see the module);
    `use_masks`: match by mask IoU when both sides have masks (else box IoU)."""

    def __init__(self, *, iou_threshold: float = 0.3, use_masks: bool = False, max_age: int = 1):
        self.iou_threshold = iou_threshold
        self.use_masks = use_masks
        self.max_age = max_age
        self.tracks: list[_Track] = []
        self.next_id = 1

    def seed(self, boxes: np.ndarray, labels: np.ndarray, track_ids: np.ndarray) -> None:
        """Restore the tracks of an earlier run's last frame (resume): boxes [N, 4], labels [N], ids [N]."""
        self.tracks = [
            _Track(int(t), int(lab), np.asarray(b, np.float32), None)
            for b, lab, t in zip(boxes, labels, track_ids, strict=True)
        ]
        self.next_id = max([self.next_id, *(int(t) + 1 for t in track_ids)])

    def update(self, boxes: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """int64 [N] track ids of a frame's instances: boxes [N, 4] xyxy, labels [N], masks bool [N, H, W]."""
        n = len(boxes)
        ids = np.zeros(n, np.int64)
        matched_tracks: set[int] = set()
        if n and self.tracks:
            iou = self._iou(boxes, masks)
            same_class = np.asarray(labels)[:, None] == np.array([t.label for t in self.tracks])[None, :]
            iou = np.where(same_class, iou, 0.0)
            from scipy.optimize import linear_sum_assignment  # here: a 0.4 s import only videos need

            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.iou_threshold:
                    ids[r] = self.tracks[c].track_id
                    matched_tracks.add(c)
        survivors = []
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.age += 1
                if track.age <= self.max_age:
                    survivors.append(track)
        new_tracks = []
        for r in range(n):
            if ids[r] == 0:
                ids[r] = self.next_id
                self.next_id += 1
            mask = masks[r] if (self.use_masks and masks is not None) else None
            new_tracks.append(_Track(int(ids[r]), int(labels[r]), np.asarray(boxes[r], np.float32), mask))
        self.tracks = new_tracks + survivors
        return ids

    def _iou(self, boxes: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        if self.use_masks and masks is not None and all(t.mask is not None for t in self.tracks):
            prev = np.stack([t.mask for t in self.tracks])
            if prev.shape[1:] == masks.shape[1:]:
                return mask_iou(masks, prev)
        return box_iou(boxes, np.stack([t.box for t in self.tracks]))
