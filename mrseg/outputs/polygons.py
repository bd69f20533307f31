"""Binary masks -> polygons that each consumer's own rasteriser turns back into the mask.

Pixel (x, y) is the square [x, x+1] x [y, y+1]. Each consumer rasterises differently, so each gets its own
coordinates (`convention`):
- "coco": vertices on pixel edges, as pycocotools' `frPyObjects` rasterises them (annotations.json): OpenCV's
  contour through the boundary pixels' centres, shifted by +0.5, grown by 0.5 px (mitred), made valid and
  simplified (topology kept) with shapely.
- "labelme": vertices at the boundary pixels' centres (int x, y): labelme's `shape_to_mask` draws with PIL
  `polygon(fill=1, outline=1)` (inside and outline pixels). Simplified with `cv2.approxPolyDP`.
- "yolo": the labelme vertices, rasterised as ultralytics' `polygon2mask` (`cv2.fillPoly` on the points
  truncated to int32); the writer stores (x + 0.5) / W, which the loader's x_n * W truncates back to x.

Every part (8-connected component) is kept: a 1-px part becomes a degenerate polygon (its point three times),
a 1-px strip a zero-width polygon (labelme and ultralytics draw the outline, so its pixels), COCO's edge
polygon a real rectangle. Vertices lie inside the image ("coco": 0..W, 0..H; the others: 0..W-1, 0..H-1).

Simplification scales with the part: tolerance `simplify * min(1, thickness / 4)`, thickness = 2 * pixels /
boundary length (1 for a 1-px strip). If the consumer's rasterisation of the simplified part has IoU below
`FIDELITY_IOU` with the part (holes filled), it is traced again at half the tolerance, then unsimplified
(exact for every convention). Holes are not expressed here (`masks.hole_areas`): the writers handle them.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import PIL.Image
import PIL.ImageDraw
import shapely
from pycocotools import mask as mask_util
from shapely.geometry import LineString, Point, Polygon

from mrseg.outputs.mask_crop import MaskCrop, as_crop

DEFAULT_SIMPLIFY = 1.0
FIDELITY_IOU = 0.95
THICK_PX = 4.0
CONVENTIONS = ("coco", "labelme", "yolo")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _coco_candidate(contour: np.ndarray, tol: float, size: tuple[int, int]) -> list[np.ndarray]:
    """Edge polygons `[K, 2]` (local frame) of one pixel-centre contour `[K, 2]`, simplified by `tol`."""
    pts = contour.astype(np.float64) + 0.5
    if len(pts) >= 3:
        geom = shapely.make_valid(Polygon(pts))
    elif len(pts) == 2:
        geom = LineString(pts)
    else:
        geom = Point(pts[0])
    geom = geom.buffer(0.5, cap_style="square", join_style="mitre")
    if tol > 0:
        geom = shapely.make_valid(geom.simplify(tol, preserve_topology=True))
    h, w = size
    out = []
    for poly in _polygons(geom):
        coords = np.asarray(poly.exterior.coords)[:-1]  # the ring repeats its first point
        coords = np.round(np.clip(coords, 0, (w, h)), 2)
        if len(coords) >= 3:
            out.append(coords)
    return out


def _polygons(geom) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    return [g for part in getattr(geom, "geoms", []) for g in _polygons(part)]


def _centre_candidate(contour: np.ndarray, tol: float) -> list[np.ndarray]:
    """Pixel-centre polygon `[K >= 3, 2]` (int) of one contour, simplified by `tol` (Douglas-Peucker)."""
    pts = contour
    if tol > 0 and len(pts) > 3:
        pts = cv2.approxPolyDP(pts.reshape(-1, 1, 2).astype(np.int32), tol, True).reshape(-1, 2)
    if len(pts) < 3:
        pts = np.concatenate([pts, np.repeat(pts[-1:], 3 - len(pts), axis=0)])
    return [pts.astype(np.int64)]


def rasterise(polygons: list[np.ndarray], convention: str, height: int, width: int) -> np.ndarray:
    """The union of `polygons` (each `[K, 2]`, in `convention`'s coordinates) as that convention's consumer
    rasterises them, bool `[height, width]` (pycocotools; PIL as labelme; cv2.fillPoly as ultralytics)."""
    if not polygons:
        return np.zeros((height, width), bool)
    if convention == "coco":
        rles = mask_util.frPyObjects([p.reshape(-1).tolist() for p in polygons], height, width)
        with warnings.catch_warnings():  # pycocotools' decode warns about NumPy 2's __array__ copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_util.decode(mask_util.merge(rles)).astype(bool)
    if convention == "labelme":
        image = PIL.Image.new("L", (width, height), 0)
        draw = PIL.ImageDraw.Draw(image)
        for p in polygons:
            draw.polygon([(float(x), float(y)) for x, y in p], fill=1, outline=1)
        return np.asarray(image, dtype=bool)
    if convention == "yolo":
        canvas = np.zeros((height, width), np.uint8)
        for p in polygons:
            cv2.fillPoly(canvas, [np.asarray(p, np.int32).reshape(-1, 1, 2)], 1)
        return canvas.astype(bool)
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def part_tolerance(pixels: int, boundary: int, simplify: float) -> float:
    """The simplification tolerance (px) of a part of `pixels` px whose contour has `boundary` points."""
    thickness = 2.0 * pixels / max(boundary, 1)
    return simplify * min(1.0, thickness / THICK_PX)


def trace_polygons(
    mask: np.ndarray | MaskCrop,
    convention: str = "coco",
    simplify: float = DEFAULT_SIMPLIFY,
    min_area: float = 0,
) -> list[np.ndarray]:
    """Polygons `[K, 2]` (float64, image coordinates in `convention`) of the outer boundaries of a mask
    `[H, W]` (or `MaskCrop`), largest part first (see the module doc); parts under `min_area` px dropped."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    mc = as_crop(mask)
    if mc.crop.size == 0:
        return []
    crop = np.pad(mc.crop.astype(np.uint8), 1)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    parts = []
    for contour in contours:
        bx, by, bw, bh = cv2.boundingRect(contour)
        local = contour[:, 0, :].astype(np.int64) - (bx, by)
        target = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(target, [local.reshape(-1, 1, 2).astype(np.int32)], -1, 1, thickness=cv2.FILLED)
        target = target.astype(bool)  # the part with its holes filled
        pixels = int(target.sum())
        if pixels < min_area:
            continue
        tol = part_tolerance(pixels, len(local), simplify)
        polys = _fit(local, target, convention, tol)
        shift = (mc.x0 - 1 + bx, mc.y0 - 1 + by)
        parts.append((pixels, [p.astype(np.float64) + shift for p in polys]))
    parts.sort(key=lambda p: -p[0])
    return [p for _, polys in parts for p in polys]


def _fit(local: np.ndarray, target: np.ndarray, convention: str, tol: float) -> list[np.ndarray]:
    """The most simplified polygons of one part (local frame) that its consumer rasterises at
    IoU >= FIDELITY_IOU with `target` (bool `[h, w]`), trying `tol`, `tol / 2`, then no simplification."""
    h, w = target.shape
    for t in (tol, tol / 2, 0.0) if tol > 0 else (0.0,):
        if convention == "coco":
            polys = _coco_candidate(local, t, (h, w))
        else:
            polys = _centre_candidate(local, t)
        if t == 0 or consumer_iou(polys, convention, target) >= FIDELITY_IOU:
            return polys
    return polys


def consumer_iou(polygons: list[np.ndarray], convention: str, target: np.ndarray) -> float:
    """IoU of `polygons` as their consumer rasterises them with `target` (bool `[h, w]`). COCO's is computed
    on pycocotools' RLEs (its `decode` warns under NumPy 2, which a caller may have made an error)."""
    h, w = target.shape
    if convention != "coco":
        return _iou(rasterise(polygons, convention, h, w), target)
    drawn = mask_util.merge(mask_util.frPyObjects([p.reshape(-1).tolist() for p in polygons], h, w))
    want = mask_util.encode(np.asfortranarray(target.astype(np.uint8)))
    return float(mask_util.iou([drawn], [want], [0])[0, 0])
