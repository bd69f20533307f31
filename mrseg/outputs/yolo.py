"""`yolo/`: a YOLO-seg dataset of the predictions that ultralytics loads from any working directory.

`yolo/images/<name>.<ext>`: each input image (a hard link to the source, else a symbolic link, else a copy;
video frames have no image file, so their labels have none either). `yolo/labels/<name>.txt`: YOLO-seg lines
`class x1 y1 x2 y2 ...` (coords in 0..1). `yolo/data.yaml` (`data_yaml`, written by `finalize`): `train` and
`val` both point at `images` and there is no `path:` key, so ultralytics resolves them against the yaml's own
folder (its `check_det_dataset` rule); the folder can be moved as a whole.

Class index: position of the category in `real_categories(classes)` (the model's real categories, no "N/A"
placeholders, sorted by COCO category id); data.yaml lists `i: name  # category_id N` for each.

Points are at the centres of the mask's boundary pixels, written as (x + 0.5) / W, (y + 0.5) / H, so that
ultralytics' `polygon2mask` (the points times (W, H), truncated to int32, then `cv2.fillPoly`) draws exactly
the traced pixels (`mrseg.outputs.polygons`, convention "yolo"). YOLO-seg holds one polygon per instance, so
the parts of a multi-part instance are joined into one ring by zero-width bridges between their nearest
vertices (as ultralytics' own COCO converter does; fillPoly draws each bridge as a line of pixels), and holes
of at least `masks.DEFAULT_MIN_AREA` px are cut in the same way (fillPoly's even-odd fill leaves them empty).
An instance whose mask is empty (no pixel over the threshold) is written as its box, the only shape YOLO-seg
can give it, so that every instance has a line.
`yolo/data.yaml` with the class names is written by `finalize`.

Models without masks write the YOLO format that holds what they predict (`box_lines`): a box-only model
(Faster R-CNN) YOLO detection lines `class cx cy w h`; a keypoint model YOLO-pose lines
`class cx cy w h x1 y1 v1 ... xK yK vK` (keypoints divided by the image size as ultralytics' own COCO
converter does; v = 2 predicted, `0 0 0` not), with `kpt_shape: [K, 3]`, `flip_idx` (left/right keypoint
pairs by name) and `kpt_names` in data.yaml. A model with masks and keypoints writes YOLO-pose (one YOLO line
can't hold both; its masks are in the other formats).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np

from mrseg.model.coco_classes import real_categories
from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.labelme import instance_polygons
from mrseg.outputs.mask_crop import MaskCrop, instance_crop
from mrseg.outputs.masks import DEFAULT_MIN_AREA, DEFAULT_SIMPLIFY, hole_areas
from mrseg.outputs.paths import output_path, output_stem
from mrseg.outputs.polygons import FIDELITY_IOU, consumer_iou

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
    lines += keypoint_yaml_lines(names)
    return "\n".join(lines) + "\n"


def flip_index(keypoint_names: list[str]) -> list[int] | None:
    """ultralytics' `flip_idx`: for each keypoint, the one it becomes in a left-right mirrored image (pairs
    found by name, `left_*` <-> `right_*`); None when no name has a left/right partner."""
    index = {name: k for k, name in enumerate(keypoint_names)}
    swap = {"left": "right", "right": "left"}
    out = []
    for name in keypoint_names:
        side, _, rest = name.partition("_")
        out.append(index.get(f"{swap[side]}_{rest}", index[name]) if side in swap else index[name])
    return None if out == list(range(len(keypoint_names))) else out


def keypoint_yaml_lines(categories: list[dict]) -> list[str]:
    """data.yaml's YOLO-pose keys for categories with `keypoints` names: `kpt_shape: [K, 3]`, `flip_idx`
    and `kpt_names` per class index; none when no category has keypoints. YOLO-pose has one K for a
    dataset: categories with another number of keypoints are refused."""
    named = {i: list(c["keypoints"]) for i, c in enumerate(categories) if c.get("keypoints")}
    if not named:
        return []
    first = next(iter(named.values()))
    if any(len(v) != len(first) for v in named.values()):
        sizes = {categories[i]["name"]: len(v) for i, v in named.items()}
        raise ValueError(f"yolo: YOLO-pose needs one number of keypoints for every class, got {sizes}")
    lines = [
        "# YOLO-pose: each line is 'class cx cy w h' then x y v per keypoint (v: 2 predicted, 0 not).",
        f"kpt_shape: [{len(first)}, 3]",
    ]
    flip = flip_index(first)
    if flip is not None:
        lines.append(f"flip_idx: [{', '.join(map(str, flip))}]")
    lines.append("kpt_names:")
    for i, kpt_names in named.items():
        lines.append(f"  {i}:")
        lines += [f"    - {json.dumps(str(n))}" for n in kpt_names]
    return lines


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


COARSE_VERTICES = 64


def _nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices (i, j) of the nearest pair between points `a` `[M, 2]` and `b` `[N, 2]` (M x N distances)."""
    flat = int(np.argmin(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)))
    return flat // len(b), flat % len(b)


def _window(k: int, size: int, half: int) -> np.ndarray:
    """Indices of a closed ring of `size` vertices within `half` of vertex `k` (wrapping)."""
    return np.unique((k + np.arange(-half, half + 1)) % size)


def merge_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Join polygons `[K_i, 2]` into one ring `[sum K_i + 2 (n-1), 2]`, starting from the first: the part
    nearest to the ring so far is spliced in next, going out along a bridge and back along the same bridge
    (Prim's algorithm: the bridges form a spanning tree of the parts). Distances are searched on at most
    `COARSE_VERTICES` vertices a part, then the bridge's ends are refined among the vertices around them."""
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts]
    if not parts:
        return np.zeros((0, 2))
    n = len(parts)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])[:-1]])
    coarse = [np.linspace(0, len(p) - 1, min(len(p), COARSE_VERTICES)).astype(np.int64) for p in parts]
    cpts = np.concatenate([p[c] for p, c in zip(parts, coarse, strict=True)])
    cowner, cindex = np.repeat(np.arange(n), [len(c) for c in coarse]), np.concatenate(coarse)
    merged = np.zeros(n, bool)
    best = np.full(n, np.inf)  # coarse squared distance of each part to the merged ones
    pair = np.zeros((n, 3), np.int64)  # (merged part, its vertex, this part's vertex) of that distance
    ring, newest = np.arange(len(parts[0])), 0
    merged[0] = True
    for _ in range(n - 1):
        src = np.flatnonzero(cowner == newest)
        rest = np.flatnonzero(~merged[cowner])  # coarse vertices of the parts still out
        d = ((cpts[src][:, None, :] - cpts[None, rest, :]) ** 2).sum(-1)
        near = d.argmin(0)
        d = d[near, np.arange(len(rest))]
        order = np.lexsort((d, cowner[rest]))  # per part, its nearest vertex first
        _, first = np.unique(cowner[rest][order], return_index=True)
        for v in order[first]:
            k = cowner[rest[v]]
            if d[v] < best[k]:
                best[k], pair[k] = d[v], (newest, cindex[src[near[v]]], cindex[rest[v]])
        newest = int(np.argmin(np.where(merged, np.inf, best)))
        via, a, b = pair[newest]
        wa = _window(a, len(parts[via]), len(parts[via]) // COARSE_VERTICES + 1)
        wb = _window(b, len(parts[newest]), len(parts[newest]) // COARSE_VERTICES + 1)
        ia, ib = _nearest_pair(parts[via][wa], parts[newest][wb])
        a, b = wa[ia], wb[ib]
        i = int(np.flatnonzero(ring == starts[via] + a)[0])
        own = starts[newest] + np.arange(len(parts[newest]))
        loop = np.concatenate([own[b:], own[: b + 1]])  # around the part, back to its bridge vertex
        ring = np.concatenate([ring[: i + 1], loop, ring[i:]])
        merged[newest] = True
    return np.concatenate(parts)[ring]


def hole_rings(mask: MaskCrop, min_area: float = DEFAULT_MIN_AREA) -> list[np.ndarray]:
    """The unsimplified inner boundaries `[K, 2]` (pixel centres of the mask pixels around each hole of at
    least `min_area` px, image coordinates) of a mask crop."""
    if not any(a >= min_area for a in hole_areas(mask)):
        return []
    mc = mask.tightened()
    crop = np.pad(mc.crop.astype(np.uint8), 1)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    rings = []
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
        if parent < 0:
            continue  # an outer boundary
        hole = np.zeros_like(crop)
        cv2.fillPoly(hole, [contour], 1)
        if int((hole.astype(bool) & (crop == 0)).sum()) >= min_area:
            rings.append(contour[:, 0, :].astype(np.float64) + (mc.x0 - 1, mc.y0 - 1))
    return rings


MAX_PRUNED_PARTS = 24  # the smallest parts of a fragmented mask that `_ring` tries leaving out


def ring_iou(ring: np.ndarray, mask: MaskCrop) -> float:
    """IoU of `ring` (pixel-centre vertices, image coordinates) as ultralytics draws a YOLO-seg line, with the
    tightened mask crop `mask`."""
    return consumer_iou([ring - (mask.x0, mask.y0)], "yolo", mask.crop.astype(bool))


def _ring(parts: list[np.ndarray], holes: list[np.ndarray], mask: MaskCrop) -> tuple[np.ndarray, int]:
    """One ring for the parts and holes of a mask, and how many parts were left out. The bridges that join
    parts are drawn too (a line of pixels each): where a small part lies far away, its bridge costs more
    than the part brings, so small parts are left out one by one, smallest first, while that raises the
    drawn mask's IoU (only when the ring with every part is below FIDELITY_IOU)."""
    ring = merge_parts(parts + holes)
    if len(parts) < 2:
        return ring, 0
    mask = mask.tightened()
    best = ring_iou(ring, mask)
    if best >= FIDELITY_IOU:
        return ring, 0
    keep = list(range(len(parts)))
    sizes = [abs(cv2.contourArea(p.astype(np.float32))) + len(p) for p in parts]
    for k in sorted(keep, key=sizes.__getitem__)[:MAX_PRUNED_PARTS]:
        trial = [j for j in keep if j != k]
        if not trial:
            break
        candidate = merge_parts([parts[j] for j in trial] + holes)
        iou = ring_iou(candidate, mask)
        if iou > best:
            keep, ring, best = trial, candidate, iou
    return ring, len(parts) - len(keep)


def yolo_lines(
    det: Detections,
    instances: list[dict],
    simplify: float = DEFAULT_SIMPLIFY,
    class_index: dict[int, int] | None = None,
    stats: dict | None = None,
) -> list[str]:
    """One YOLO-seg line per instance (6 decimals), in the instances' order. `class_index`: category id ->
    class (`yolo_class_index`); None: model label - 1 (a model whose labels are its real categories in id
    order). `stats["parts_left_out"]` counts the mask parts left out (see `_ring`)."""
    lines = []
    for i, inst in enumerate(instances):
        polygons = instance_polygons(det, i, inst, simplify, convention="yolo")
        parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
        if parts and det.masks is not None:
            crop = instance_crop(det.masks, i, det.boxes[i])
            ring, left_out = _ring(parts, hole_rings(crop), crop)
            if stats is not None:
                stats["parts_left_out"] = stats.get("parts_left_out", 0) + left_out
            ring = ring + 0.5  # pixel centres, in continuous coordinates
        else:  # no masks, or an empty one: the box's corners
            x, y, w, h = inst["bbox"]
            ring = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
        ring = np.clip(ring / (det.width, det.height), 0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in ring.reshape(-1))
        cls = int(inst["label"]) - 1 if class_index is None else class_index[int(inst["category_id"])]
        lines.append(f"{cls} {coords}")
    return lines


def _box_fields(instance: dict, width: int, height: int) -> list[float]:
    """YOLO's normalised `cx cy w h` of an instance record's box, clipped to the image."""
    x, y, w, h = instance["bbox"]
    x0, x1 = np.clip([x, x + w], 0.0, width) / width
    y0, y1 = np.clip([y, y + h], 0.0, height) / height
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def box_lines(det: Detections, instances: list[dict], class_index: dict[int, int] | None = None) -> list[str]:
    """One YOLO detection line `class cx cy w h` (normalised, 6 decimals) per instance; with keypoints
    (`instance["keypoints"]`, COCO's flat [x, y, v] x K), the YOLO-pose line: the box then `x y v` per
    keypoint, x / W and y / H (a keypoint not predicted: `0 0 0`). `class_index` as in `yolo_lines`."""
    lines = []
    for inst in instances:
        fields = _box_fields(inst, det.width, det.height)
        flat = inst.get("keypoints")
        if flat is not None:
            for x, y, v in np.asarray(flat, np.float64).reshape(-1, 3):
                if v > 0:
                    fields += [min(max(x / det.width, 0.0), 1.0), min(max(y / det.height, 0.0), 1.0), v]
                else:
                    fields += [0.0, 0.0, 0.0]
        cls = int(inst["label"]) - 1 if class_index is None else class_index[int(inst["category_id"])]
        lines.append(" ".join([str(cls), *(f"{v:.6f}" for v in fields)]))
    return lines


def label_lines(
    det: Detections,
    instances: list[dict],
    simplify: float = DEFAULT_SIMPLIFY,
    class_index: dict[int, int] | None = None,
    stats: dict | None = None,
) -> list[str]:
    """The label file's lines for what the model predicts: YOLO-pose lines with keypoints, detection lines
    without masks (`box_lines`), else YOLO-seg polygons (`yolo_lines`)."""
    if det.keypoints is not None or det.masks is None:
        return box_lines(det, instances, class_index)
    return yolo_lines(det, instances, simplify, class_index, stats)


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
        self.stats: dict = {}

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
        lines = label_lines(det, instances, self.simplify, self.class_index, self.stats)
        atomic_write_text(self.path_for(item), "".join(line + "\n" for line in lines))
        image = self.image_path_for(item)
        if image is not None and os.path.isfile(item.path):
            link_image(item.path, image)

    def close(self) -> None:
        left_out = self.stats.get("parts_left_out", 0)
        if left_out:
            warnings.warn(
                f"yolo: {left_out} small mask part(s) were left out of their instance's polygon: YOLO-seg "
                "holds one polygon per instance, and the bridge joining each of them would have drawn more "
                "wrong pixels than the part has (the exact masks are in results.json / predictions.jsonl)",
                stacklevel=2,
            )
