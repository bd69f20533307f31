"""Prediction on very large images in overlapping tiles, and the merge of the tiles' detections.

Detections of one object by several tiles (whole in an overlap, or cut by tile edges) are merged
class-aware, greedily by score, when they agree where both tiles see (`_same_object`): the union box, the best
score, the OR of the masks, the best-scoring member's keypoints (a point: nothing to union). Masks are held as
crops of their boxes (`CroppedMasks`): a tiled 8000x4000 photo with 100 objects never allocates 100 full-size
masks.
"""

from __future__ import annotations

import numpy as np

from mrseg.engine.predict.tracker import box_iou
from mrseg.outputs.mask_crop import CroppedMasks, MaskCrop, instance_crop


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of side `tile` covering an image; neighbours overlap by `overlap` (0..1)."""
    if tile <= 0:
        raise ValueError(f"--tile must be a positive size in pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--tile-overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(size: int) -> list[int]:
        return [0] if size <= tile else [*range(0, size - tile, stride), size - tile]

    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


def _union(masks: list[MaskCrop], height: int, width: int) -> MaskCrop:
    """The OR of image masks, as one crop of their common bounds."""
    parts = [m for m in masks if m.crop.size]
    if not parts:
        return MaskCrop(np.zeros((0, 0), bool), 0, 0, height, width, tight=True)
    x0, y0 = min(m.x0 for m in parts), min(m.y0 for m in parts)
    x1, y1 = max(m.bounds[2] for m in parts), max(m.bounds[3] for m in parts)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    for m in parts:
        mx0, my0, mx1, my1 = m.bounds
        out[my0 - y0 : my1 - y0, mx0 - x0 : mx1 - x0] |= m.crop
    return MaskCrop(out, x0, y0, height, width)


def _same_object(a: dict, b: dict, iou_threshold: float) -> bool:
    """Whether two detections from different tiles are one object: they agree where both tiles see.

    Inside the windows' shared region, the masks (or, without masks, the boxes clipped to it) must overlap by
    IoU >= `iou_threshold`. This merges both duplicates (the object whole in the overlap) and the parts of an
    object cut by tile edges, whose full boxes barely overlap.
    """
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["window"], b["window"]
    rx0, ry0, rx1, ry1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if rx0 >= rx1 or ry0 >= ry1:
        return False
    if a["mask"] is not None and b["mask"] is not None:
        ma, mb = a["mask"].window(rx0, ry0, rx1, ry1), b["mask"].window(rx0, ry0, rx1, ry1)
        union = np.count_nonzero(ma | mb)
        return union > 0 and np.count_nonzero(ma & mb) / union >= iou_threshold
    region = np.array([rx0, ry0, rx1, ry1], np.float32)
    ca = np.concatenate([np.maximum(a["box"][:2], region[:2]), np.minimum(a["box"][2:], region[2:])])
    cb = np.concatenate([np.maximum(b["box"][:2], region[:2]), np.minimum(b["box"][2:], region[2:])])
    return bool(box_iou(ca[None], cb[None])[0, 0] >= iou_threshold)


def merge_tiles(
    tiles: list[dict],
    windows: list[tuple[int, int, int, int]],
    height: int,
    width: int,
    *,
    iou_threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Merge per-tile detections into one image's detections.

    Args:
        tiles: per window, numpy `boxes` float32 [n, 4] (tile pixels), `scores` [n], `labels` int64 [n] and
            optionally `masks` bool [n, th, tw] (tile size) or `CroppedMasks` of the tile, and `keypoints`
            float32 [n, K, 3] (tile pixels, visibility) with `keypoint_scores` [n, K].
        windows: (x0, y0, x1, y1) of each tile in the full image.

    Returns:
        `boxes` float32 [N, 4] in image pixels, `scores` [N], `labels` [N], when the tiles had masks `masks`
        as `CroppedMasks` [N, height, width] (`np.asarray` gives the bool array), and when they had
        keypoints `keypoints` [N, K, 3] in image pixels and `keypoint_scores` [N, K].
    """
    dets = []
    for t, (tile, window) in enumerate(zip(tiles, windows, strict=True)):
        x0, y0 = window[:2]
        masks = tile.get("masks")
        keypoints, keypoint_scores = tile.get("keypoints"), tile.get("keypoint_scores")
        shift = np.array([x0, y0, 0], np.float32)  # (x, y) into the image, visibility unchanged
        for k in range(len(tile["scores"])):
            box = np.asarray(tile["boxes"][k], np.float32)
            mask = None
            if masks is not None:  # this instance's crop in the tile, moved into the image
                c = instance_crop(masks, k, box)
                mask = MaskCrop(c.crop, c.x0 + x0, c.y0 + y0, height, width, tight=True)
            dets.append({
                "tile": t, "window": window,
                "score": float(tile["scores"][k]), "label": int(tile["labels"][k]),
                "box": box + np.array([x0, y0, x0, y0], np.float32),
                "mask": mask,
                "keypoints": None if keypoints is None else np.asarray(keypoints[k], np.float32) + shift,
                "keypoint_scores": None if keypoint_scores is None else np.asarray(keypoint_scores[k]),
            })  # fmt: skip
    dets.sort(key=lambda d: -d["score"])

    groups: list[list[dict]] = []  # the first member of each group is its best-scoring detection
    group_boxes = np.zeros((len(dets), 4), np.float32)  # union box of each group, to find candidates fast
    group_labels = np.zeros(len(dets), np.int64)
    for det in dets:
        n = len(groups)
        b = det["box"]
        touching = np.nonzero(
            (group_labels[:n] == det["label"])
            & (group_boxes[:n, 0] < b[2]) & (group_boxes[:n, 2] > b[0])
            & (group_boxes[:n, 1] < b[3]) & (group_boxes[:n, 3] > b[1])
        )[0]  # fmt: skip
        for g in touching:
            members = groups[g]
            # Only members from other tiles decide; parts of one object that a tile sees as separate pieces
            # (a U shape cut by the edge) may still join through their piece in a neighbouring tile.
            if any(m["tile"] != det["tile"] and _same_object(m, det, iou_threshold) for m in members):
                members.append(det)
                group_boxes[g, :2] = np.minimum(group_boxes[g, :2], b[:2])
                group_boxes[g, 2:] = np.maximum(group_boxes[g, 2:], b[2:])
                break
        else:
            groups.append([det])
            group_boxes[n], group_labels[n] = b, det["label"]

    out = {
        "boxes": group_boxes[: len(groups)].copy(),
        "scores": np.array([g[0]["score"] for g in groups], np.float32),
        "labels": np.array([g[0]["label"] for g in groups], np.int64),
    }  # fmt: skip
    if any(t.get("masks") is not None for t in tiles):
        unions = [_union([m["mask"] for m in g if m["mask"] is not None], height, width) for g in groups]
        out["masks"] = CroppedMasks(unions, height, width)
    shapes = [t["keypoints"].shape[1:] for t in tiles if t.get("keypoints") is not None]
    if shapes:  # each group's best member's keypoints
        (k, _), best = shapes[0], [g[0] for g in groups]
        out["keypoints"] = np.array([d["keypoints"] for d in best], np.float32).reshape(-1, k, 3)
        out["keypoint_scores"] = np.array([d["keypoint_scores"] for d in best], np.float32).reshape(-1, k)
    return out
