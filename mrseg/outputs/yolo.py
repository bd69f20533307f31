"""`yolo/`: a YOLO-seg dataset of the predictions that ultralytics loads from any working directory.

`yolo/images/<name>.<ext>`: each input image (a hard link to the source, else a symbolic link, else a copy;
video frames have no image file, so their labels have none either). `yolo/labels/<name>.txt`: YOLO-seg lines
`class x1 y1 x2 y2 ...` (coords in 0..1). `yolo/data.yaml` (`data_yaml`, written by `finalize`): `train` and
`val` both point at `images` and there is no `path:` key, so ultralytics resolves them against the yaml's own
folder (its `check_det_dataset` rule); the folder can be moved as a whole.

Class index: position of the category in `real_categories(classes)` (the model's real categories, no "N/A"
placeholders, sorted by COCO category id); data.yaml lists `i: name  # category_id N` for each.

YOLO-seg holds one polygon per instance, so the parts of a multi-part instance are joined into one ring by
zero-width bridges between their nearest vertices (as Ultralytics' own COCO converter does); holes are filled.
`yolo/data.yaml` with the class names is written by `finalize`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mrseg.model.coco_classes import real_categories
from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.labelme import instance_polygons
from mrseg.outputs.masks import DEFAULT_SIMPLIFY
from mrseg.outputs.paths import output_path, output_stem

YOLO_DIR = "yolo"


def yolo_class_index(classes: list[dict]) -> dict[int, int]:
    """COCO category id -> YOLO class index (its position in `real_categories(classes)`)."""
    return {int(c["id"]): i for i, c in enumerate(real_categories(classes))}


def data_yaml(classes: list[dict]) -> str:
    """The text of `yolo/data.yaml` for a model's class list `{"id", "name"}` per label."""
    names = real_categories(classes)
    lines = [
        "# Written by mrseg predict: a YOLO-seg dataset of the predictions.",
        "# images/: the input images (hard links, symbolic links or copies); labels/: one .txt per image.",
        "# train and val both point at images/. No 'path:' key: ultralytics resolves them against this",
        "# file's folder, from any working directory (add 'path: <this folder>' for ultralytics < 8.1).",
        "# Class index i = position in the model's real categories sorted by COCO category id (see below).",
        "train: images",
        "val: images",
        f"nc: {len(names)}",
        "names:",
    ]
    # A JSON string is a valid YAML double-quoted scalar, so any name round-trips.
    lines += [f"  {i}: {json.dumps(str(c['name']))}  # category_id {c['id']}" for i, c in enumerate(names)]
    return "\n".join(lines) + "\n"


def link_image(src: str | os.PathLike, dst: Path) -> None:
    """Put the image `src` at `dst` (replacing it): a hard link, else a symbolic link, else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        try:
            os.symlink(os.path.abspath(src), tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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


def yolo_lines(
    det: Detections,
    instances: list[dict],
    simplify: float = DEFAULT_SIMPLIFY,
    class_index: dict[int, int] | None = None,
) -> list[str]:
    """One YOLO-seg line per instance (6 decimals), in the instances' order. `class_index`: category id ->
    class (`yolo_class_index`); None: model label - 1 (a model whose labels are its real categories in id
    order)."""
    lines = []
    for i, inst in enumerate(instances):
        polygons = instance_polygons(det, i, inst, simplify)
        parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
        if not parts:
            continue
        ring = merge_parts(sorted(parts, key=len, reverse=True))
        ring = np.clip(ring / (det.width, det.height), 0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in ring.reshape(-1))
        cls = int(inst["label"]) - 1 if class_index is None else class_index[int(inst["category_id"])]
        lines.append(f"{cls} {coords}")
    return lines


class YoloWriter:
    """Writes `OUT/yolo/labels/<name>.txt` per input (atomically; an empty file when nothing was found) and
    links the input image to `OUT/yolo/images/<name><ext>`. `classes`: the model's `{"id", "name"}` per label
    (class indices as in data.yaml); None: class = model label - 1."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        simplify: float = DEFAULT_SIMPLIFY,
        classes: list[dict] | None = None,
    ):
        self.out_dir = out_dir
        self.simplify = simplify
        self.class_index = None if classes is None else yolo_class_index(classes)

    def path_for(self, item: InputItem):
        return output_path(self.out_dir, YOLO_DIR, "labels", output_stem(item), suffix=".txt")

    def image_path_for(self, item: InputItem) -> Path | None:
        """Where the input image goes (`images/<name><source ext>`); None for a video frame (no file)."""
        if item.frame is not None:
            return None
        return output_path(self.out_dir, YOLO_DIR, "images", output_stem(item), suffix=Path(item.path).suffix)

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        lines = yolo_lines(det, instances, self.simplify, self.class_index)
        atomic_write_text(self.path_for(item), "".join(line + "\n" for line in lines))
        image = self.image_path_for(item)
        if image is not None and os.path.isfile(item.path):
            link_image(item.path, image)

    def close(self) -> None:
        pass
