"""Prediction on very large images in overlapping tiles, and the merge of the tiles' detections.

Each tile is predicted at its own resolution and its boxes shifted into the full image. Detections of one
object by several tiles (whole in an overlap, or cut by tile edges) are merged class-aware, greedily by score:
a detection joins a group when it agrees with a member from another tile where both tiles see
(see `_same_object`). A group's box is the union of its members', its score the best one's, and its mask the
OR of its members' masks, written as bool straight into the full-size mask (no full-size float mask exists).
"""

from __future__ import annotations

import numpy as np

from mrseg.engine.tracker import box_iou


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of side `tile` covering an image; neighbours overlap by `overlap` (0..1)."""
    if tile <= 0:
        raise ValueError(f"--tile must be a positive size in pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--tile-overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        out = list(range(0, size - tile, stride))
        return out + [size - tile]

    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


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
        ma = a["mask"][ry0 - ay0 : ry1 - ay0, rx0 - ax0 : rx1 - ax0]
        mb = b["mask"][ry0 - by0 : ry1 - by0, rx0 - bx0 : rx1 - bx0]
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
            optionally `masks` bool [n, th, tw] (tile size).
        windows: (x0, y0, x1, y1) of each tile in the full image.

    Returns:
        `boxes` float32 [N, 4] in image pixels, `scores` [N], `labels` [N], and, when the tiles had masks,
        `masks` bool [N, height, width].
    """
    dets = []
    for t, (tile, window) in enumerate(zip(tiles, windows, strict=True)):
        x0, y0 = window[:2]
        masks = tile.get("masks")
        for k in range(len(tile["scores"])):
            dets.append({
                "tile": t, "window": window,
                "score": float(tile["scores"][k]), "label": int(tile["labels"][k]),
                "box": np.asarray(tile["boxes"][k], np.float32) + np.array([x0, y0, x0, y0], np.float32),
                "mask": None if masks is None else masks[k],
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
        full = np.zeros((len(groups), height, width), bool)
        for g, members in enumerate(groups):
            for m in members:
                x0, y0, x1, y1 = m["window"]
                full[g, y0:y1, x0:x1] |= m["mask"][: y1 - y0, : x1 - x0]
        out["masks"] = full
    return out
