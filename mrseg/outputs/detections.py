"""The one record of what was found in one input, shared by the predictor and every writer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class InputItem:
    """One thing to predict on: an image file, or one frame of a video.

    `id`: the stable COCO image id; `rel_path`: the file name relative to its SOURCE (annotations.json's
    `file_name`). For a video frame, `path` is the video file, `video` its path relative to its SOURCE,
    `frame` the 0-based frame index (else None), `fps` the video's frame rate, and `rel_path`
    `<video rel path without extension>/<frame:06d>.jpg` (the layout of extracted frames). `name`: the
    unique, sanitized output stem (posix, no extension) of the per-item writers (`labelme/<name>.json`),
    filled by `mrseg.data.sources`; when empty it is derived from `rel_path`.
    """

    id: int
    path: str
    rel_path: str
    frame: int | None = None
    video: str | None = None
    fps: float | None = None
    name: str = ""


@dataclass
class Detections:
    """Instances in one image, in original-image pixels.

    boxes: float32 [N, 4] xyxy; scores: float32 [N]; labels: int64 [N] (model labels, 1..K);
    masks: bool [N, H, W], or a `mask_crop.CroppedMasks` (the same masks as per-instance crops, which the
    writers encode without building full-size masks), or None without a mask head.
    keypoints: float32 [N, K, 3] (x, y in image pixels, visibility: 1 = predicted, as torchvision's) and
    keypoint_scores: float32 [N, K] (the heatmap logit, not a probability) with a keypoint head, else None.
    track_ids: int64 [N] for video frames, else None. width, height: the original image size.
    image: the decoded input, uint8 RGB [H, W, 3], only when asked for (`Predictor.stream(...,
    keep_images=True)`, which overlays need); else None.
    """

    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoint_scores: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)
