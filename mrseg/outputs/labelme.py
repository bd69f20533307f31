"""`labelme/<name>.json`: one labelme file per image, a polygon per instance part named by its class."""

from __future__ import annotations

import json
import os

import numpy as np

from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.mask_crop import instance_crop
from mrseg.outputs.masks import DEFAULT_SIMPLIFY, mask_to_polygons
from mrseg.outputs.paths import output_path, output_stem

LABELME_VERSION = "5.5.0"


def instance_polygons(det: Detections, i: int, instance: dict, simplify: float) -> list[list[float]]:
    """Polygons of instance `i`: its record's polygons when it has them, else traced from its mask (holes
    filled); without masks, its box as a 4-corner polygon."""
    seg = instance.get("segmentation")
    if isinstance(seg, list) and seg:
        return seg
    if det.masks is not None:
        return mask_to_polygons(instance_crop(det.masks, i, det.boxes[i]), simplify)
    x, y, w, h = instance["bbox"]
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def labelme_document(
    item: InputItem,
    det: Detections,
    instances: list[dict],
    image_path: str,
    simplify: float = DEFAULT_SIMPLIFY,
) -> dict:
    """The labelme JSON dict for one image. Parts of one multi-part instance share a `group_id` (the track id
    for video); the score goes into `description`."""
    shapes = []
    for i, inst in enumerate(instances):
        polygons = instance_polygons(det, i, inst, simplify)
        group = inst.get("track_id", i if len(polygons) > 1 else None)
        for poly in polygons:
            shapes.append(
                {
                    "label": inst["name"],
                    "points": [[float(poly[k]), float(poly[k + 1])] for k in range(0, len(poly), 2)],
                    "group_id": group,
                    "description": f"score {inst['score']:.3f}",
                    "shape_type": "polygon",
                    "flags": {},
                    "mask": None,
                }
            )
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(det.height),
        "imageWidth": int(det.width),
    }


class LabelmeWriter:
    """Writes `OUT/labelme/<name>.json` for each input (atomically). `imagePath` is the source image relative
    to the json file (labelme resolves it that way); for a video frame it is the frame's file name."""

    def __init__(self, out_dir: str | os.PathLike, simplify: float = DEFAULT_SIMPLIFY):
        self.out_dir = out_dir
        self.simplify = simplify

    def path_for(self, item: InputItem):
        return output_path(self.out_dir, "labelme", output_stem(item), suffix=".json")

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        path = self.path_for(item)
        if item.frame is not None:
            image_path = os.path.basename(item.rel_path)
        else:
            try:
                image_path = os.path.relpath(os.path.abspath(item.path), path.parent).replace(os.sep, "/")
            except ValueError:  # another drive on Windows
                image_path = os.path.abspath(item.path)
        doc = labelme_document(item, det, instances, image_path, self.simplify)
        atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2))

    def close(self) -> None:
        pass
