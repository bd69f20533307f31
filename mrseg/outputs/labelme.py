"""`labelme/<name>.json`: one labelme file per image, a polygon per instance part named by its class.

Polygons are in labelme's convention (pixel centres, `mrseg.outputs.polygons`), so that labelme's
`shape_to_mask` gives back the model's mask. A mask with a hole of at least `masks.DEFAULT_MIN_AREA` px, or
no pixel, is one `shape_type: "mask"` shape (labelme >= 5.3): `points` the top-left and bottom-right pixels
of its box, `mask` its crop as a base64 PNG, which `shapes_to_label` pastes back exactly.

Without masks each instance is a `rectangle` (its box corners, continuous pixels). A keypoint model adds a
`point` shape per predicted keypoint, labelled with the keypoint's name, at the model's (x, y); an
instance's shapes share its `group_id` (the track id for video, else its index in the file).
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import PIL.Image

from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.frames import write_frame
from mrseg.outputs.mask_crop import MaskCrop, instance_crop
from mrseg.outputs.masks import DEFAULT_MIN_AREA, DEFAULT_SIMPLIFY, has_holes, mask_to_polygons
from mrseg.outputs.paths import output_path, output_stem

LABELME_VERSION = "5.5.0"


def mask_shape_fields(mask: MaskCrop, box) -> dict:
    """`points` and `mask` of a labelme `mask` shape for a mask crop (an empty mask: a blank 1x1 at `box`)."""
    mc = mask.tightened()
    if mc.crop.size == 0:
        x0 = int(np.clip(np.floor(box[0]), 0, mc.width - 1))
        y0 = int(np.clip(np.floor(box[1]), 0, mc.height - 1))
        crop = np.zeros((1, 1), np.uint8)
    else:
        x0, y0, crop = mc.x0, mc.y0, mc.crop.astype(np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(crop).save(buf, format="PNG")
    x1, y1 = x0 + crop.shape[1] - 1, y0 + crop.shape[0] - 1
    return {
        "points": [[float(x0), float(y0)], [float(x1), float(y1)]],
        "mask": base64.b64encode(buf.getvalue()).decode("ascii"),
    }


def instance_shapes(det: Detections, i: int, instance: dict, simplify: float) -> list[dict]:
    """Instance `i`'s labelme shapes (no label/group fields): a polygon per part, or one `mask` shape when
    polygons cannot express the mask (holes, empty mask); without masks, its box as a `rectangle`."""
    if det.masks is None:
        x, y, w, h = instance["bbox"]
        corner = [round(x + w, 2), round(y + h, 2)]  # the file's 0.01 px, not 124.78999999999999
        return [{"shape_type": "rectangle", "points": [[x, y], corner], "mask": None}]
    mc = instance_crop(det.masks, i, det.boxes[i])
    if mc.area == 0 or has_holes(mc, DEFAULT_MIN_AREA):
        return [{"shape_type": "mask", **mask_shape_fields(mc, det.boxes[i])}]
    polygons = mask_to_polygons(mc, simplify, convention="labelme")
    return [
        {
            "shape_type": "polygon",
            "points": [[float(p[k]), float(p[k + 1])] for k in range(0, len(p), 2)],
            "mask": None,
        }
        for p in polygons
    ]


def point_shapes(instance: dict, names: list[str] | None) -> list[dict]:
    """One labelme `point` shape per predicted keypoint (v > 0) of an instance record, labelled with the
    keypoint's name (`keypoint<k>`, 1-based, when the category names none)."""
    flat = instance.get("keypoints") or []
    scores = instance.get("keypoint_scores") or []
    shapes = []
    for k in range(len(flat) // 3):
        x, y, v = flat[3 * k : 3 * k + 3]
        if v <= 0:
            continue
        shapes.append({
            "label": names[k] if names and k < len(names) else f"keypoint{k + 1}",
            "points": [[float(x), float(y)]],
            "description": f"keypoint score {scores[k]:.3f}" if k < len(scores) else "",
            "shape_type": "point",
            "mask": None,
        })  # fmt: skip
    return shapes


def labelme_document(
    item: InputItem,
    det: Detections,
    instances: list[dict],
    image_path: str,
    simplify: float = DEFAULT_SIMPLIFY,
    classes: list[dict] | None = None,
) -> dict:
    """The labelme JSON dict for one image. An instance's shapes (parts, box, keypoints) share a `group_id`
    (its track id, or its index when it has several); the score goes into `description` ("score 0.912")."""
    shapes = []
    names = {int(c["id"]): list(c["keypoints"]) for c in classes or [] if c.get("keypoints")}
    for i, inst in enumerate(instances):
        description = f"score {inst['score']:.3f}" if "score" in inst else ""
        parts = [
            dict(part, label=inst["name"], description=description)
            for part in instance_shapes(det, i, inst, simplify)
        ]
        parts += point_shapes(inst, names.get(int(inst["category_id"])))
        group = inst.get("track_id", i if len(parts) > 1 else None)
        shapes += [  # labelme's key order
            {"label": p["label"], "points": p["points"], "group_id": group, "description": p["description"]}
            | {"shape_type": p["shape_type"], "flags": {}, "mask": p["mask"]}
            for p in parts
        ]
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
    to the json file (labelme resolves it that way); a video frame is written beside its json
    (`<name>.jpg`, `image_path_for`) and `imagePath` names it."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        simplify: float = DEFAULT_SIMPLIFY,
        classes: list[dict] | None = None,
    ):
        self.out_dir = out_dir
        self.simplify = simplify
        self.classes = classes

    def path_for(self, item: InputItem):
        return output_path(self.out_dir, "labelme", output_stem(item), suffix=".json")

    def image_path_for(self, item: InputItem) -> Path | None:
        """The image file this writer makes: a video frame's `<name>.jpg`; None for an image file."""
        return self.path_for(item).with_suffix(".jpg") if item.frame is not None else None

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        path = self.path_for(item)
        frame_path = self.image_path_for(item)
        if frame_path is not None:
            write_frame(frame_path, item, image_rgb)
            image_path = frame_path.name
        else:
            try:
                image_path = os.path.relpath(os.path.abspath(item.path), path.parent).replace(os.sep, "/")
            except ValueError:  # another drive on Windows
                image_path = os.path.abspath(item.path)
        doc = labelme_document(item, det, instances, image_path, self.simplify, self.classes)
        atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2))

    def close(self) -> None:
        pass
