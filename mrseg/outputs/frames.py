"""Video frames as JPEG files beside the labelme / YOLO files that refer to them: a frame has no image file of
its own to point to or link."""

from __future__ import annotations

import os

import cv2
import numpy as np

from mrseg.outputs.atomic import atomic_write_bytes
from mrseg.outputs.detections import InputItem

FRAME_JPEG_QUALITY = 95


def write_frame(path: str | os.PathLike, item: InputItem, image_rgb: np.ndarray | None) -> None:
    """Writes frame `item`'s pixels (uint8 RGB [H, W, 3]) to `path` as a JPEG, atomically."""
    if image_rgb is None:
        raise ValueError(f"no pixels given for video frame {item.rel_path}; its image file needs them")
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
    if not ok:
        raise OSError(f"OpenCV could not encode video frame {item.rel_path} as JPEG")
    atomic_write_bytes(path, buf.tobytes())
