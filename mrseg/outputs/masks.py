"""Binary masks <-> COCO polygons and RLE.

Polygons are traced by `mrseg.outputs.polygons` in the coordinates each consumer's rasteriser expects, every
part of a multi-part object its own polygon. Every function here takes a full-size mask `[H, W]` or a
`MaskCrop` and works on the mask's crop only (RLE too: the image's counts are derived from the crop), so the
cost follows the object's size, not the image's.

Holes: a COCO polygon list cannot express one (pycocotools unions the polygons), so `mask_to_segmentation`
falls back to RLE for a mask with a hole of at least `min_area` (4) pixels; smaller holes are filled. labelme
writes such an instance as a `mask` shape, YOLO cuts the holes in with bridges.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_util

from mrseg.outputs.mask_crop import MaskCrop, as_crop
from mrseg.outputs.polygons import DEFAULT_SIMPLIFY, trace_polygons

DEFAULT_MIN_AREA = 4.0


def mask_to_polygons(
    mask: np.ndarray | MaskCrop,
    simplify: float = DEFAULT_SIMPLIFY,
    min_area: float = 0,
    convention: str = "coco",
) -> list[list[float]]:
    """Polygons `[[x0, y0, x1, y1, ...], ...]` of a mask `[H, W]` (or `MaskCrop`), one per part (holes
    filled), in `convention`'s coordinates (`mrseg.outputs.polygons`); parts under `min_area` px dropped."""
    polygons = trace_polygons(mask, convention, simplify, min_area)
    return [[round(float(v), 2) for v in p.reshape(-1)] for p in polygons]


def hole_areas(mask: np.ndarray | MaskCrop) -> list[int]:
    """Pixel counts of the mask's holes (background regions not connected to the image border)."""
    mc = as_crop(mask)
    if mc.crop.size == 0:
        return []
    crop = np.pad(mc.crop.astype(np.uint8), 1)
    _, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0][:, 3] < 0).all():
        return []  # no inner boundary, so no hole: skips the (slower) labelling below for most masks
    background = (crop == 0).astype(np.uint8)
    # The 1-px padding makes the outside one connected background region containing (0, 0); 4-connected
    # background pairs with OpenCV's 8-connected foreground contours.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    outside = labels[0, 0]
    return [int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, n) if i != outside]


def has_holes(mask: np.ndarray | MaskCrop, min_area: float = DEFAULT_MIN_AREA) -> bool:
    """Whether the mask has a hole of at least `min_area` pixels."""
    return any(a >= min_area for a in hole_areas(mask))


def rle_counts(mask: np.ndarray | MaskCrop) -> np.ndarray:
    """Uncompressed COCO RLE counts (int64) of a binary mask `[H, W]`, as `pycocotools.mask.encode` has them.

    From the crop: in column-major order each image column is zeros, the crop's column, zeros, so the runs'
    edges are the crop's vertical changes. Counts start with a (possibly empty) run of zeros and alternate; a
    run of ones reaching the bottom of a column continues at the top of the next when that starts with a one.
    """
    mc = as_crop(mask)
    total = mc.height * mc.width
    if mc.crop.size == 0:
        return np.array([total], np.int64)
    crop = mc.crop
    h, w = crop.shape
    change = np.empty((h + 1, w), bool)  # change[r, c]: pixel (r - 1, c) differs from (r, c), outside = 0
    change[0], change[h] = crop[0], crop[h - 1]
    np.not_equal(crop[1:], crop[:-1], out=change[1:h])
    rows, cols = np.nonzero(change)
    edges = (mc.x0 + cols.astype(np.int64)) * mc.height + (mc.y0 + rows)  # image positions, column-major
    # Sorted, the edges alternate run start / run end. A run that ends at the bottom of a column and one that
    # starts at the top of the next meet at the same position: they are one run, so both edges go.
    edges, seen = np.unique(edges, return_counts=True)
    edges = edges[seen == 1]
    counts = np.diff(np.concatenate([[0], edges, [total]]))
    return counts[:-1] if counts[-1] == 0 else counts  # no trailing empty run of zeros


def rle_encode(mask: np.ndarray | MaskCrop) -> dict:
    """Compressed COCO RLE of a binary mask `[H, W]` (or `MaskCrop`): `{"size": [H, W], "counts": str}`
    (JSON-ready, identical to `pycocotools.mask.encode`'s)."""
    mc = as_crop(mask)
    h, w = mc.height, mc.width
    rle = mask_util.frPyObjects({"size": [h, w], "counts": rle_counts(mc)}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _to_coco_rle(rle: dict) -> dict:
    counts = rle["counts"]
    h, w = rle["size"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_util.frPyObjects(rle, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_decode(rle: dict) -> np.ndarray:
    """Binary mask bool `[H, W]` from a COCO RLE (compressed with str or bytes counts, or uncompressed)."""
    return mask_util.decode(_to_coco_rle(rle)).astype(bool)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons with pycocotools (their union) to bool `[height, width]`."""
    return rle_decode(segmentation_to_rle(list(polygons), height, width))  # a tuple of polygons too


def segmentation_to_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """Any COCO segmentation (polygons, compressed or uncompressed RLE) as compressed RLE with str counts."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return rle_encode(np.zeros((height, width), bool))
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    else:
        rle = _to_coco_rle(segmentation)
        if isinstance(segmentation["counts"], str):
            return {"size": list(segmentation["size"]), "counts": segmentation["counts"]}
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_to_segmentation(
    mask: np.ndarray | MaskCrop,
    mask_format: str = "polygon",
    simplify: float = DEFAULT_SIMPLIFY,
    min_area: float = DEFAULT_MIN_AREA,
) -> list[list[float]] | dict:
    """A COCO `segmentation` for one binary mask `[H, W]` (or `MaskCrop`): "rle", compressed RLE; "polygon",
    polygons, but RLE when the mask has a hole of >= `min_area` px or is empty, so it always matches the mask
    (within the polygons' simplification)."""
    if mask_format not in ("polygon", "rle"):
        raise ValueError(f"mask_format must be 'polygon' or 'rle', got {mask_format!r}")
    mask = as_crop(mask)
    if mask_format == "polygon" and not has_holes(mask, min_area):
        polygons = mask_to_polygons(mask, simplify)
        if polygons:
            return polygons
    return rle_encode(mask)


def segmentation_area_bbox(segmentation: list | dict, height: int, width: int) -> tuple[int, list[float]]:
    """pycocotools' `area` and `toBbox` ([x, y, w, h], tight around the pixels) of a COCO segmentation in a
    `height` x `width` image, so that annotations.json's `area` and `bbox` agree with its segmentation."""
    rle = _to_coco_rle(segmentation_to_rle(segmentation, height, width))
    return int(mask_util.area(rle)), [round(float(v), 2) for v in mask_util.toBbox(rle)]
