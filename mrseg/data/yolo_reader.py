"""Read a YOLO-seg dataset (`data.yaml`, `images/`, `labels/`) for `mrseg convert`.

Each label line `class x1 y1 x2 y2 ...` (normalised) is one instance, rasterised as ultralytics'
`polygon2mask` (points times (W, H), truncated to int32, `cv2.fillPoly`); a line `class cx cy w h` is its box.
Images: the files of the yaml's `train`/`val`/`test` folders (or `--images DIR`), labels at the same path with
`images` replaced by `labels` (ultralytics' rule), sizes from the headers. Category ids: the
`# category_id N` comments `mrseg predict` writes after each name, else class index + 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import yaml

from mrseg.data.annotation_source import (
    SourceDataset,
    SourceError,
    SourceImage,
    SourceInstance,
    image_size_from_file,
    relative_name,
)
from mrseg.outputs.mask_crop import MaskCrop

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
_CATEGORY_ID = re.compile(r"^\s*(\d+)\s*:.*#\s*category_id\s+(-?\d+)\s*$")


def _names(data: dict, path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise SourceError(f"{path}: 'names' keys must be class indices 0..n-1") from None
        if keys != list(range(len(keys))):
            raise SourceError(f"{path}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise SourceError(f"{path}: has no 'names' (the class names, a list or {{index: name}})")


def _category_ids(text: str, n: int) -> list[int]:
    found = {}
    for line in text.splitlines():
        m = _CATEGORY_ID.match(line)
        if m:
            found[int(m.group(1))] = int(m.group(2))
    if sorted(found) == list(range(n)) and len(set(found.values())) == n:
        return [found[i] for i in range(n)]
    return list(range(1, n + 1))


def _image_dirs(data: dict, yaml_path: Path) -> list[Path]:
    base = yaml_path.parent / str(data["path"]) if data.get("path") else yaml_path.parent  # absolute: as is
    dirs = []
    for key in ("train", "val", "test"):
        value = data.get(key)
        for v in value if isinstance(value, list) else [value] if value else []:
            d = base / str(v)
            if d.suffix == ".txt":
                raise SourceError(f"{yaml_path}: '{key}: {v}' is an image list; pass --images DIR instead")
            if d.resolve() not in [x.resolve() for x in dirs]:
                dirs.append(d)
    return dirs


def label_path(image: Path) -> Path:
    """ultralytics' rule: the last `images` folder of the path replaced by `labels`, suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def line_mask(values: list[float], height: int, width: int) -> np.ndarray:
    """bool `[height, width]` of one label line's numbers after the class (polygon or cx cy w h box)."""
    if len(values) == 4:
        cx, cy, w, h = values
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        values = [x0, y0, x1, y0, x1, y1, x0, y1]
    pts = (np.asarray(values, np.float64).reshape(-1, 2) * (width, height)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [pts], color=1)
    return mask.astype(bool)


def read_yolo(src: str | Path, images_dir: str | Path | None = None) -> SourceDataset:
    """A `SourceDataset` of the YOLO-seg dataset whose `data.yaml` is `src` (or lies in folder `src`)."""
    src = Path(src)
    yaml_path = src / "data.yaml" if src.is_dir() else src
    try:
        text = yaml_path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise SourceError(f"{yaml_path}: file not found (a YOLO dataset needs its data.yaml)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SourceError(f"{yaml_path}: not a readable YAML file ({e})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{yaml_path}: not a YOLO data.yaml (expected a mapping with 'names')")
    names = _names(data, yaml_path)
    ids = _category_ids(text, len(names))
    categories = sorted(
        ({"id": i, "name": n, "supercategory": ""} for i, n in zip(ids, names, strict=True)),
        key=lambda c: c["id"],
    )
    dirs = [Path(images_dir)] if images_dir is not None else _image_dirs(data, yaml_path)
    files = []
    for d in dirs:
        if not d.is_dir():
            raise SourceError(f"{yaml_path}: image folder {d} does not exist; pass --images DIR")
        files += sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"{yaml_path}: no images in {', '.join(map(str, dirs))}")
    root = dirs[0] if len(dirs) == 1 else yaml_path.parent

    def _images() -> Iterator[SourceImage]:
        for image_id, file in enumerate(files, start=1):
            width, height = image_size_from_file(file, str(file))
            image = SourceImage(image_id, relative_name(file, root), str(file), width, height)
            labels = label_path(file)
            lines = labels.read_text(encoding="utf-8").splitlines() if labels.is_file() else []
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                context = f"{labels}: line {n}"
                try:
                    cls, *values = line.split()
                    cls, values = int(cls), [float(v) for v in values]
                except ValueError:
                    raise SourceError(f"{context}: expected 'class x1 y1 x2 y2 ...' numbers") from None
                if not 0 <= cls < len(names):
                    raise SourceError(
                        f"{context}: class {cls} is not in data.yaml's names (0..{len(names) - 1})"
                    )
                if len(values) != 4 and (len(values) < 6 or len(values) % 2):
                    raise SourceError(f"{context}: expected 4 box numbers or at least 3 x y points")
                if min(values) < -0.01 or max(values) > 1.01:
                    raise SourceError(f"{context}: coordinates must be normalised to 0..1")
                mask = line_mask(values, height, width)
                if not mask.any():
                    raise SourceError(f"{context}: the polygon covers no pixel")
                image.instances.append(SourceInstance(MaskCrop.from_mask(mask), ids[cls]))
            yield image

    return SourceDataset(categories, _images())
