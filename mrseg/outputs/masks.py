"""Binary masks <-> COCO polygons and RLE.

Coordinates are COCO's continuous pixel coordinates: pixel (x, y) covers the square [x, x+1] x [y, y+1],
which is how pycocotools rasterises polygons. OpenCV contours run through the centres of the boundary pixels,
so they are shifted by +0.5 and grown by 0.5 px (mitred) to lie on the pixel edges, then simplified with
shapely (Douglas-Peucker, `simplify` px, topology kept), made valid, and parts under `min_area` px dropped.
Every part of a multi-part object becomes its own polygon.

Holes: a COCO polygon list cannot express a hole (pycocotools unions the polygons). `mask_to_segmentation`
therefore falls back to RLE for an instance whose mask has a hole of at least `min_area` pixels, so
annotations.json and results.json stay exact. The polygon-only formats (labelme, YOLO) get the outer
boundaries (`mask_to_polygons`): holes are filled there.
"""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from pycocotools import mask as mask_util
from shapely.geometry import LineString, Point, Polygon

DEFAULT_SIMPLIFY = 1.0
DEFAULT_MIN_AREA = 4.0


def _crop(mask: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """The mask cropped to its nonzero bounding box, padded by 1 px, and the crop's (x, y) origin."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1].astype(np.uint8), 1)
    return crop, int(x0) - 1, int(y0) - 1


def mask_to_shapes(
    mask: np.ndarray, simplify: float = DEFAULT_SIMPLIFY, min_area: float = DEFAULT_MIN_AREA
) -> list[Polygon]:
    """The outer boundaries of a binary mask `[H, W]` as valid shapely polygons (no holes), largest first."""
    cropped = _crop(np.asarray(mask).astype(bool))
    if cropped is None:
        return []
    crop, ox, oy = cropped
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    shapes: list[Polygon] = []
    for contour in contours:
        pts = contour[:, 0, :].astype(np.float64) + (ox + 0.5, oy + 0.5)
        if len(pts) >= 3:
            geom = shapely.make_valid(Polygon(pts))
        elif len(pts) == 2:
            geom = LineString(pts)
        else:
            geom = Point(pts[0])
        geom = geom.buffer(0.5, cap_style="square", join_style="mitre")
        if simplify > 0:
            geom = shapely.make_valid(geom.simplify(simplify, preserve_topology=True))
        shapes.extend(_polygons(geom))
    shapes = [Polygon(p.exterior) for p in shapes if Polygon(p.exterior).area >= min_area]
    return sorted(shapes, key=lambda p: -p.area)


def _polygons(geom) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    return [g for part in getattr(geom, "geoms", []) for g in _polygons(part)]


def mask_to_polygons(
    mask: np.ndarray, simplify: float = DEFAULT_SIMPLIFY, min_area: float = DEFAULT_MIN_AREA
) -> list[list[float]]:
    """COCO polygons `[[x0, y0, x1, y1, ...], ...]` (one per part, holes filled, coords rounded to 0.01)."""
    out = []
    for shape in mask_to_shapes(mask, simplify, min_area):
        coords = np.asarray(shape.exterior.coords)[:-1]  # the ring repeats its first point
        if len(coords) >= 3:
            out.append([round(float(v), 2) for v in coords.reshape(-1)])
    return out


def hole_areas(mask: np.ndarray) -> list[int]:
    """Pixel counts of the mask's holes (background regions not connected to the image border)."""
    cropped = _crop(np.asarray(mask).astype(bool))
    if cropped is None:
        return []
    crop = cropped[0]
    background = (crop == 0).astype(np.uint8)
    # The 1-px padding makes the outside one connected background region containing (0, 0); 4-connected
    # background pairs with OpenCV's 8-connected foreground contours.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    outside = labels[0, 0]
    return [int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, n) if i != outside]


def has_holes(mask: np.ndarray, min_area: float = DEFAULT_MIN_AREA) -> bool:
    """Whether the mask has a hole of at least `min_area` pixels."""
    return any(a >= min_area for a in hole_areas(mask))


def rle_encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary mask `[H, W]`: `{"size": [H, W], "counts": str}` (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


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
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), bool)
    rles = mask_util.frPyObjects(polygons, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


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
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii")}


def mask_to_segmentation(
    mask: np.ndarray,
    mask_format: str = "polygon",
    simplify: float = DEFAULT_SIMPLIFY,
    min_area: float = DEFAULT_MIN_AREA,
) -> list[list[float]] | dict:
    """A COCO `segmentation` for one binary mask `[H, W]`.

    "rle": compressed RLE. "polygon": polygons, except RLE when the mask has a hole of >= `min_area` px or no
    part survives the sliver filter (empty or tiny masks), so the segmentation always matches the mask.
    """
    if mask_format not in ("polygon", "rle"):
        raise ValueError(f"mask_format must be 'polygon' or 'rle', got {mask_format!r}")
    if mask_format == "polygon" and not has_holes(mask, min_area):
        polygons = mask_to_polygons(mask, simplify, min_area)
        if polygons:
            return polygons
    return rle_encode(mask)
