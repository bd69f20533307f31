"""Read a folder of labelme files for `mrseg convert`: one instance per shape, or per (label, group_id).

Shapes are rasterised as labelme's `shape_to_mask` does (PIL polygon/rectangle/ellipse, outline and fill; a
`mask` shape is its base64 PNG pasted at `points[0]`). `point`, `line`, `linestrip` shapes hold no area:
counted as lost. Categories: the labels sorted by name, ids 1..K. A description "score 0.912" (as
`mrseg predict` writes) is read back as the score.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from mrseg.data.annotation_source import (
    SourceDataset,
    SourceError,
    SourceImage,
    SourceInstance,
    image_size_from_file,
    relative_name,
)
from mrseg.data.coco import load_json
from mrseg.outputs.mask_crop import MaskCrop

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
_SCORE = re.compile(r"^\s*score\s+([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


def shape_mask(shape: dict, height: int, width: int, context: str) -> np.ndarray:
    """bool `[height, width]` of one labelme shape, as labelme's `shape_to_mask` / `shapes_to_label` draw."""
    kind = shape.get("shape_type") or "polygon"
    try:
        points = [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError):
        raise SourceError(f"{context}: 'points' must be a list of [x, y] pairs") from None
    if kind == "mask":
        if len(points) < 1 or not shape.get("mask"):
            raise SourceError(f"{context}: a mask shape needs 'points' and a base64 PNG 'mask'")
        try:
            crop = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).astype(bool)
        except (binascii.Error, OSError, ValueError) as e:
            raise SourceError(f"{context}: 'mask' is not a base64 PNG ({e})") from None
        if crop.ndim == 3:
            crop = crop.any(-1)
        out = np.zeros((height, width), bool)
        x0, y0 = int(points[0][0]), int(points[0][1])
        cx0, cy0 = max(0, -x0), max(0, -y0)
        h, w = min(crop.shape[0] - cy0, height - y0 - cy0), min(crop.shape[1] - cx0, width - x0 - cx0)
        if h > 0 and w > 0:
            out[y0 + cy0 : y0 + cy0 + h, x0 + cx0 : x0 + cx0 + w] = crop[cy0 : cy0 + h, cx0 : cx0 + w]
        return out
    image = PIL.Image.new("L", (width, height), 0)
    draw = PIL.ImageDraw.Draw(image)
    if kind == "polygon":
        if len(points) < 3:
            raise SourceError(f"{context}: a polygon needs at least 3 points, got {len(points)}")
        draw.polygon(points, outline=1, fill=1)
    elif kind == "rectangle":
        if len(points) != 2:
            raise SourceError(f"{context}: a rectangle needs 2 points, got {len(points)}")
        (x0, y0), (x1, y1) = points
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind == "circle":
        if len(points) != 2:
            raise SourceError(f"{context}: a circle needs 2 points (centre, rim), got {len(points)}")
        (cx, cy), (px, py) = points
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    else:
        raise SourceError(f"{context}: shape_type {kind!r} has no area")
    return np.asarray(image, dtype=bool)


def _doc(path: Path) -> dict:
    doc = load_json(path, "labelme", SourceError)
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise SourceError(f"{path}: not a labelme file (expected an object with a 'shapes' list)")
    return doc


def read_labelme(folder: str | Path, images_dir: str | Path | None = None) -> SourceDataset:
    """A `SourceDataset` of every `*.json` under `folder` (recursively, sorted). Images: `imagePath` relative
    to the file, or its name in `images_dir`; sizes: `imageHeight`/`imageWidth`, else the image header."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))
    if not files:
        raise SourceError(f"{folder}: no labelme .json files in this folder")
    labels = set()
    for path in files:
        for k, shape in enumerate(_doc(path)["shapes"]):
            if not isinstance(shape, dict) or not str(shape.get("label") or "").strip():
                raise SourceError(f"{path}: shape {k}: has no label")
            if (shape.get("shape_type") or "polygon") in AREA_SHAPES:
                labels.add(str(shape["label"]))
    categories = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(sorted(labels))]
    ids = {c["name"]: c["id"] for c in categories}
    dataset = SourceDataset(categories, iter(()))
    root = Path(images_dir) if images_dir is not None else folder

    def _images() -> Iterator[SourceImage]:
        for image_id, path in enumerate(files, start=1):
            doc = _doc(path)
            image_path = str(doc.get("imagePath") or path.with_suffix(".jpg").name)
            if images_dir is not None:
                file = Path(images_dir) / Path(image_path.replace("\\", "/")).name
            else:
                file = path.parent / image_path
            try:
                height, width = int(doc["imageHeight"]), int(doc["imageWidth"])
            except (KeyError, TypeError, ValueError):
                width, height = image_size_from_file(file, str(path))
            image = SourceImage(image_id, relative_name(file, root), str(file), width, height)
            groups: dict[tuple, list[tuple[int, dict]]] = {}
            for k, shape in enumerate(doc["shapes"]):
                kind = shape.get("shape_type") or "polygon"
                if kind not in AREA_SHAPES:
                    dataset.losses[f"labelme {kind} shape (no area) left out"] += 1
                    continue
                group = shape.get("group_id")
                key = (shape["label"], group) if group is not None else ("", k)
                groups.setdefault(key, []).append((k, shape))
            for parts in groups.values():
                mask = np.zeros((height, width), bool)
                for k, shape in parts:
                    mask |= shape_mask(shape, height, width, f"{path}: shape {k} (label {shape['label']!r})")
                k, shape = parts[0]
                if not mask.any():
                    raise SourceError(
                        f"{path}: shape {k} (label {shape['label']!r}): covers no pixel of the "
                        f"{width}x{height} image"
                    )
                score = _SCORE.match(str(shape.get("description") or ""))
                image.instances.append(
                    SourceInstance(
                        MaskCrop.from_mask(mask),
                        ids[str(shape["label"])],
                        score=float(score.group(1)) if score else None,
                    )
                )
            yield image

    dataset.images = _images()
    return dataset
