"""`yolo/labels/<name>.txt`: YOLO-seg lines `class x1 y1 x2 y2 ...` (class = model label - 1, coords in 0..1).

YOLO-seg holds one polygon per instance, so the parts of a multi-part instance are joined into one ring by
zero-width bridges between their nearest vertices (as Ultralytics' own COCO converter does); holes are filled.
`yolo/data.yaml` with the class names is written by `finalize`.
"""

from __future__ import annotations

import os

import numpy as np

from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.labelme import instance_polygons
from mrseg.outputs.masks import DEFAULT_SIMPLIFY
from mrseg.outputs.paths import output_path, output_stem


def merge_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Join polygons `[K_i, 2]` into one ring `[sum K_i + 2 (n-1), 2]`: each further part is spliced in at the
    vertex pair nearest to the ring so far, going out along a bridge and back along the same bridge."""
    if not parts:
        return np.zeros((0, 2))
    ring = np.asarray(parts[0], dtype=np.float64)
    for part in parts[1:]:
        part = np.asarray(part, dtype=np.float64)
        d = ((ring[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        loop = np.concatenate([part[j:], part[: j + 1]])  # around the part, back to its bridge vertex
        ring = np.concatenate([ring[: i + 1], loop, ring[i:]])
    return ring


def yolo_lines(det: Detections, instances: list[dict], simplify: float = DEFAULT_SIMPLIFY) -> list[str]:
    """One YOLO-seg line per instance (6 decimals), in the instances' order."""
    lines = []
    for i, inst in enumerate(instances):
        polygons = instance_polygons(det, i, inst, simplify)
        parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
        if not parts:
            continue
        ring = merge_parts(sorted(parts, key=len, reverse=True))
        ring = np.clip(ring / (det.width, det.height), 0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in ring.reshape(-1))
        lines.append(f"{int(inst['label']) - 1} {coords}")
    return lines


class YoloWriter:
    """Writes `OUT/yolo/labels/<name>.txt` per input (atomically; an empty file when nothing was found)."""

    def __init__(self, out_dir: str | os.PathLike, simplify: float = DEFAULT_SIMPLIFY):
        self.out_dir = out_dir
        self.simplify = simplify

    def path_for(self, item: InputItem):
        return output_path(self.out_dir, "yolo", "labels", output_stem(item), suffix=".txt")

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        lines = yolo_lines(det, instances, self.simplify)
        atomic_write_text(self.path_for(item), "".join(line + "\n" for line in lines))

    def close(self) -> None:
        pass
