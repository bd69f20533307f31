"""A COCO instance-segmentation dataset for training and validation.

`CocoDataset(ann_file, image_dir)[i] -> (image float [3, H, W] in 0..1, target)` where target holds
"boxes" float32 [N, 4] xyxy pixels, "labels" int64 [N] in 1..K, "masks" uint8 [N, H, W], "image_id" int64 [];
with `keypoints=True` also "keypoints" float32 [N, P, 3] (x, y, visibility 0/1/2); with `masks=False` no
"masks" (segmentations are then not read: box-only and keypoint-only models).

Real-world annotation files:
- category ids (any integers, gaps allowed) map to labels 1..K in ascending id order (`classes[label - 1]`);
- masks may be polygons, compressed or uncompressed RLE (decoded with pycocotools.mask);
- `iscrowd` regions are dropped (the model contract has no "ignore" field), so the RoI sampler may use one as
  background; images whose only annotations are crowd are left out of training; images without any are kept
  as negatives;
- keypoints (`keypoints=True`): the categories' `keypoints` names fix P and the flip map (`keypoint_flip`:
  "left_*" <-> "right_*"); an annotation without keypoints or with num_keypoints 0 stays a box whose
  keypoints are all unlabelled (visibility 0: no keypoint loss);
- broken annotations (unknown image or category, zero area, degenerate polygons, boxes outside the image, RLE
  of another size) and images whose file is missing are skipped and reported ONCE as counts (`report`, a
  logged warning), so a bad line never stops an epoch. An image that fails to decode in training is logged
  and replaced by the next one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from mrseg.data.augment import keypoint_flip_map
from mrseg.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from mrseg.outputs.masks import polygons_to_mask, rle_decode

logger = logging.getLogger(__name__)

# (image uint8 [H, W, 3], target dict of numpy arrays, rng) -> (image, target)
Transform = Callable[[np.ndarray, dict, np.random.Generator], tuple[np.ndarray, dict]]


class DatasetError(ValueError):
    """The annotation file or image folder cannot be used at all; the message says which file and why."""


@dataclass
class DatasetReport:
    """What was left out of the annotation file: counts per reason, and in `skipped` each entry as (kind, its
    name: "annotation id N", "image id N (file name)" or by position "annotation #i (...)", reason).
    `dropped_with_images`: annotations left out with their image (missing file, ...)."""

    skipped_annotations: Counter = field(default_factory=Counter)
    skipped_images: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    crowd: int = 0
    dropped_with_images: int = 0

    def skip_annotation(self, reason: str, ann: Any, index: int | None = None) -> None:
        self.skipped_annotations[reason] += 1
        self.skipped.append(("annotation", "annotation " + _entry_name(ann, index), reason))

    def skip_image(self, reason: str, info: Any, index: int | None = None) -> None:
        self.skipped_images[reason] += 1
        name = "image " + _entry_name(info, index)
        if isinstance(info, dict) and info.get("file_name") is not None:
            name += f" ({_show(info['file_name'])})"
        self.skipped.append(("image", name, reason))

    def summary(self, name: str, per_reason: int = 3) -> str | None:
        """One message for the log (each reason with its count and the first few entries it names), or None
        when nothing was skipped."""
        if not self.skipped:
            return None
        groups: dict[tuple[str, str], list[str]] = {}
        for kind, entry, reason in self.skipped:
            groups.setdefault((kind, reason), []).append(entry)
        parts = []
        for (kind, reason), entries in groups.items():
            shown = ", ".join(entries[:per_reason])
            more = f" and {len(entries) - per_reason} more" if len(entries) > per_reason else ""
            parts.append(f"{len(entries)} {kind}(s) with {reason}: {shown}{more}")
        return f"{name}: skipped " + "; ".join(parts)


def _show(value: Any) -> str:
    """A value from the file for a message: repr (so odd characters and types show), cut at 60 characters."""
    text = ascii(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entry_name(entry: Any, index: int | None) -> str:
    """How a message names an entry of the file: `id N`, else its position in its list (`#i`)."""
    entry_id = as_int(entry.get("id")) if isinstance(entry, dict) else None
    if entry_id is not None:
        return f"id {entry_id}"
    shown = _show(entry.get("id")) if isinstance(entry, dict) else _show(entry)
    return f"#{index} ({shown})" if index is not None else shown


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (which JSON's true/false become)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_int(value: Any) -> int | None:
    """`value` as an int when it is an integral, finite number (not a bool) that fits int64 (ids end up in
    int64 tensors), else None."""
    if not is_number(value):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if -(2**63) <= value < 2**63 else None


def load_json(
    path: str | os.PathLike, what: str, error: type[Exception], missing: str = "file not found"
) -> Any:
    """The parsed JSON of `path`; `error` naming the file when it is missing (`missing`: what the message
    says then), cannot be read or is not valid JSON (`what`: the kind of file it should be)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e}); is it a {what} file?") from None


def load_coco_json(path: str | os.PathLike, error: type[Exception], missing: str = "file not found") -> dict:
    """`load_json` of a COCO dataset file: `error` unless it is an object with an 'images' list."""
    data = load_json(path, "COCO annotation", error, missing)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise error(
            f"{path}: not a COCO dataset (expected an object with 'images', 'annotations', 'categories')"
        )
    return data


def _read_json(path: str) -> dict:
    data = load_coco_json(path, DatasetError, "annotation file not found; pass the COCO json with --coco")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DatasetError(f"{path}: has no 'categories'; a COCO training file lists its classes there")
    for i, c in enumerate(data["categories"]):  # the class list must be right: no skipping here
        if not isinstance(c, dict) or as_int(c.get("id")) is None:
            raise DatasetError(
                f"{path}: categories[{i}] = {_show(c)} needs an integer 'id' (and a 'name'); fix the entry"
            )
    if data.get("annotations") is not None and not isinstance(data["annotations"], list):
        raise DatasetError(f"{path}: 'annotations' is {_show(data['annotations'])}, not a list")
    return data


def _polygon_area(coords: list[float]) -> float:
    x, y = np.asarray(coords[0::2], np.float64), np.asarray(coords[1::2], np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def check_segmentation(seg: Any, height: int, width: int) -> tuple[Any, str | None]:
    """(cleaned segmentation, None) or (None, reason). Polygons keep rings with >= 3 points and area > 0."""
    if isinstance(seg, list):
        rings = []
        # pycocotools rasterises at 5x in int32 with no check: a coordinate past ~4e8 crashes the process
        # (SIGSEGV), and a far one costs memory in proportion; no real polygon reaches this far out
        reach = 8 * max(height, width) + 1024
        for ring in seg:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                continue
            if not all(map(is_number, ring)):
                return None, "non-numeric polygon"
            if not all(math.isfinite(v) for v in ring):
                return None, "non-finite polygon coordinate"
            if any(abs(v) > reach for v in ring):
                return None, "polygon coordinate far outside the image"
            if _polygon_area(ring) > 0:
                rings.append([float(v) for v in ring])
        return (rings, None) if rings else (None, "degenerate polygon")
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2 or counts is None:
            return None, "malformed RLE"
        if [as_int(size[0]), as_int(size[1])] != [height, width]:
            return None, "RLE size differs from the image size"
        if isinstance(counts, list):
            # pycocotools raises OverflowError on a negative run, when decoding
            ok = all(as_int(c) is not None and c >= 0 for c in counts) and sum(counts) == height * width
        elif isinstance(counts, (str, bytes)):
            # compressed counts whose runs do not add up to the stated size only fail when decoded, which
            # would be mid-epoch: decode once here
            raw = counts.encode("ascii") if isinstance(counts, str) else counts
            try:
                mask_utils.decode({"size": [height, width], "counts": raw})
                ok = True
            except (ValueError, TypeError):
                ok = False
        else:
            ok = False
        return (seg, None) if ok else (None, "malformed RLE")
    return None, "no segmentation"


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A checked segmentation (polygons, RLE or uncompressed RLE) -> uint8 [H, W] mask."""
    mask = polygons_to_mask(seg, height, width) if isinstance(seg, list) else rle_decode(seg)
    return mask.astype(np.uint8)


def check_keypoints(ann: dict, num_keypoints: int) -> tuple[np.ndarray | None, str | None]:
    """(keypoints float [P, 3], unlabelled ones (visibility 0) at 0, None) or (None, reason).

    Without `keypoints`, or with num_keypoints 0 and no labelled triple: P unlabelled keypoints. Otherwise
    `keypoints` must be a flat list of P (x, y, v) triples of finite numbers with v in {0, 1, 2}.
    """
    value = ann.get("keypoints")
    if value is None or (ann.get("num_keypoints") == 0 and isinstance(value, list) and not any(value[2::3])):
        return np.zeros((num_keypoints, 3), np.float32), None
    if not isinstance(value, list) or len(value) != 3 * num_keypoints:
        return None, f"keypoints not a list of {num_keypoints} (x, y, v) triples"
    if not all(map(is_number, value)):
        return None, "non-numeric keypoints"
    keypoints = np.asarray(value, np.float64).reshape(num_keypoints, 3)
    if not np.isfinite(keypoints).all():
        return None, "non-finite keypoint coordinate"
    if not np.isin(keypoints[:, 2], (0, 1, 2)).all():
        return None, "keypoint visibility not 0, 1 or 2"
    keypoints[keypoints[:, 2] == 0] = 0
    return keypoints.astype(np.float32), None


class CocoDataset(torch.utils.data.Dataset):
    """Images and instance targets from a COCO json and an image folder (see the module docstring).

    Indexing takes an int, or `(index, seed)` as yielded by `mrseg.engine.train.batch_sampler`: the seed
    drives the random transforms, so an augmented sample depends only on (index, seed), not on the worker.
    train=True leaves out images whose annotations are all crowd or all broken (only background to learn);
    train=False (validation) keeps every image whose file exists.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        *,
        transforms: Transform | None = None,
        train: bool = True,
        check_files: bool = True,
        masks: bool = True,
        keypoints: bool = False,
    ):
        self.ann_file = os.fspath(ann_file)
        self.masks, self.keypoints = masks, keypoints
        self.image_dir = os.fspath(image_dir)
        self.transforms = transforms
        if not os.path.isdir(self.image_dir):
            raise DatasetError(f"{self.image_dir}: image folder not found; pass the folder with --images")
        data = _read_json(self.ann_file)
        self.report = DatasetReport()

        categories = sorted(data["categories"], key=lambda c: as_int(c["id"]))
        self.classes = [{"id": as_int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        self.cat_to_label = {c["id"]: i + 1 for i, c in enumerate(self.classes)}
        if len(self.cat_to_label) != len(self.classes):
            raise DatasetError(f"{self.ann_file}: duplicate category ids in 'categories'")
        self.keypoint_names: list[str] = []
        self.keypoint_flip: list[int] = []
        # annotations pycocotools' keypoint evaluation cannot read (no num_keypoints, keypoints not 3 * P)
        self.unscorable_keypoints = 0
        if keypoints:
            self._read_keypoint_categories(categories)

        images = {}
        for index, info in enumerate(data["images"]):
            fields = info if isinstance(info, dict) else {}
            image_id, h, w = (as_int(fields.get(k)) for k in ("id", "height", "width"))
            name = fields.get("file_name")
            if None in (image_id, h, w) or not isinstance(name, str) or not name:
                self.report.skip_image("entry without id/file_name/width/height", info, index)
                continue
            if h <= 0 or w <= 0:
                self.report.skip_image("zero width or height", info, index)
                continue
            if h * w > DEFAULT_MAX_PIXELS:  # read_image would refuse it; its masks would not fit in memory
                self.report.skip_image("size over the image pixel limit", info, index)
                continue
            if image_id in images:
                self.report.skip_image("duplicate image id", info, index)
                continue
            images[image_id] = {"id": image_id, "file_name": name, "height": h, "width": w}

        per_image: dict[int, list[dict]] = {i: [] for i in images}
        crowd_only: Counter = Counter()
        had_annotations: set[int] = set()
        seen_ids: set[int] = set()
        for index, ann in enumerate(data.get("annotations") or []):
            ann_id = as_int(ann.get("id")) if isinstance(ann, dict) else None
            if ann_id is not None and ann_id in seen_ids:
                self.report.skip_annotation("duplicate annotation id", ann, index)
                continue
            seen_ids.add(ann_id)
            parsed = self._check_annotation(ann, images, index)
            image_id = as_int(ann.get("image_id")) if isinstance(ann, dict) else None
            if parsed == "crowd":
                crowd_only[image_id] += 1
                had_annotations.add(image_id)
            elif parsed is not None:
                per_image[parsed["image_id"]].append(parsed)
            elif image_id in images:
                had_annotations.add(image_id)

        self.images: list[dict] = []
        self.annotations: list[list[dict]] = []
        for image_id in sorted(images):
            info = images[image_id]
            if check_files and not os.path.isfile(os.path.join(self.image_dir, info["file_name"])):
                self.report.skip_image("missing image file", info)
                self.report.dropped_with_images += len(per_image[image_id])
                continue
            anns = per_image[image_id]
            if train and not anns and image_id in had_annotations:
                reason = "only crowd annotations" if crowd_only[image_id] else "all annotations broken"
                self.report.skip_image(reason, info)
                continue
            self.images.append(info)
            self.annotations.append(anns)
        message = self.report.summary(self.ann_file)
        without_masks = self.report.skipped_annotations["no segmentation"]
        if train and self.masks and without_masks and not any(self.annotations):
            raise DatasetError(
                f"{self.ann_file}: none of its annotations has a segmentation ({without_masks} have boxes "
                "only), and a mask model trains on masks: train a box-only model (--arch <layout>-box, e.g. "
                "r50-fpn-box) or add segmentations"
            )
        if message:
            logger.warning(message)
        if not self.images:
            raise DatasetError(
                f"{self.ann_file}: no usable images (file names are looked up in {self.image_dir}); "
                + (message or "the file lists no images")
            )

    def _check_annotation(self, ann: Any, images: dict, index: int) -> dict | str | None:
        """A parsed annotation, "crowd", or None (recorded in the report)."""
        if not isinstance(ann, dict):
            self.report.skip_annotation("not an object", ann, index)
            return None
        image_id = as_int(ann.get("image_id"))
        if image_id not in images:
            self.report.skip_annotation("unknown image_id", ann, index)
            return None
        category_id = as_int(ann.get("category_id"))
        if category_id not in self.cat_to_label:
            self.report.skip_annotation("unknown category_id", ann, index)
            return None
        if ann.get("iscrowd", 0):
            self.report.crowd += 1
            return "crowd"
        info = images[image_id]
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))):
            self.report.skip_annotation("missing or malformed bbox", ann, index)
            return None
        if not all(math.isfinite(v) for v in bbox):
            self.report.skip_annotation("non-finite bbox", ann, index)
            return None
        x, y, w, h = (float(v) for v in bbox)
        area = ann.get("area")
        if w <= 0 or h <= 0 or (isinstance(area, (int, float)) and area <= 0):
            self.report.skip_annotation("zero area", ann, index)
            return None
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(info["width"])), min(y + h, float(info["height"]))
        if x2 - x1 < 1.0 or y2 - y1 < 1.0:
            self.report.skip_annotation("box outside the image", ann, index)
            return None
        seg = None
        if self.masks:
            seg, reason = check_segmentation(ann.get("segmentation"), info["height"], info["width"])
            if reason:
                self.report.skip_annotation(reason, ann, index)
                return None
        parsed = {
            "image_id": image_id,
            "label": self.cat_to_label[category_id],
            "box": [x1, y1, x2, y2],
            "segmentation": seg,
        }
        if self.keypoints:
            count = len(self.keypoint_names)
            if "keypoints" in self.classes[parsed["label"] - 1]:
                value = ann.get("keypoints")
                if "num_keypoints" not in ann or not isinstance(value, list) or len(value) != 3 * count:
                    self.unscorable_keypoints += 1
                keypoints, reason = check_keypoints(ann, count)
                if reason:
                    self.report.skip_annotation(reason, ann, index)
                    return None
            else:  # a category without keypoints in a keypoint dataset: boxes only
                keypoints = np.zeros((count, 3), np.float32)
            parsed["keypoints"] = keypoints
        return parsed

    def _read_keypoint_categories(self, categories: list[dict]) -> None:
        """Keypoint names (one list, shared by every category that has keypoints), the flip map, and the
        classes' `keypoints` / `skeleton` (COCO's category fields, which a keypoint model carries)."""
        named = [c for c in categories if isinstance(c.get("keypoints"), list) and c["keypoints"]]
        if not named:
            raise DatasetError(
                f"{self.ann_file}: no category lists 'keypoints' (names); a keypoint model trains on a COCO "
                "person-keypoints file (e.g. person_keypoints_train2017.json), or pick an --arch without -kp"
            )
        names = [str(n) for n in named[0]["keypoints"]]
        for c in named[1:]:
            if [str(n) for n in c["keypoints"]] != names:
                raise DatasetError(
                    f"{self.ann_file}: categories {named[0]['id']} and {c['id']} list different 'keypoints'; "
                    "one model predicts one set of keypoints"
                )
        self.keypoint_names = names
        self.keypoint_flip = keypoint_flip_map(names)
        by_id = {int(c["id"]): c for c in named}
        for cls in self.classes:
            if cls["id"] in by_id:
                skeleton = by_id[cls["id"]].get("skeleton") or []
                cls["keypoints"] = list(names)
                cls["skeleton"] = [[int(a), int(b)] for a, b in skeleton]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        """(image uint8 [H, W, 3], target of numpy arrays) without transforms; raises ImageReadError."""
        info = self.images[index]
        path = os.path.join(self.image_dir, info["file_name"])
        image = read_image(path)
        h, w = info["height"], info["width"]
        if image.shape[:2] != (h, w):
            raise ImageReadError(
                path,
                f"decodes to {image.shape[1]}x{image.shape[0]} but {self.ann_file} says {w}x{h} (width x "
                "height, after EXIF orientation); fix the json's width/height or the image",
            )
        anns = self.annotations[index]
        target = {
            "boxes": np.array([a["box"] for a in anns], np.float32).reshape(-1, 4),
            "labels": np.array([a["label"] for a in anns], np.int64),
            "image_id": info["id"],
        }
        if self.masks:
            masks = [decode_segmentation(a["segmentation"], h, w) for a in anns]
            target["masks"] = np.array(masks, np.uint8).reshape(-1, h, w)
        if self.keypoints:
            target["keypoints"] = np.array([a["keypoints"] for a in anns], np.float32).reshape(
                -1, len(self.keypoint_names), 3
            )
        return image, target

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                image, target = self.load(i)
                break
            except ImageReadError as e:
                logger.warning("skipping an unreadable training image: %s", e)
        else:
            raise DatasetError(f"{self.ann_file}: none of the images in {self.image_dir} could be read")
        if self.transforms is not None:
            image, target = self.transforms(image, target, np.random.default_rng(seed))
        return to_tensors(image, target)


def to_tensors(image: np.ndarray, target: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 [H, W, 3] + numpy target -> float [3, H, W] in 0..1 + tensor target."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    out = {
        "boxes": torch.from_numpy(np.ascontiguousarray(target["boxes"], np.float32)),
        "labels": torch.from_numpy(np.ascontiguousarray(target["labels"], np.int64)),
        "image_id": torch.tensor(int(target["image_id"]), dtype=torch.int64),
    }
    if "masks" in target:
        out["masks"] = torch.from_numpy(np.ascontiguousarray(target["masks"], np.uint8))
    if "keypoints" in target:
        out["keypoints"] = torch.from_numpy(np.ascontiguousarray(target["keypoints"], np.float32))
    return tensor, out


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """DataLoader collate: keeps images of different sizes as a list, like the model takes them."""
    return [b[0] for b in batch], [b[1] for b in batch]
