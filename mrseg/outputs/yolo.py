"""`yolo/`: a YOLO-seg dataset of the predictions that ultralytics loads from any working directory.

`yolo/images/<name>.<ext>`: each input image (a hard link to the source, else a symbolic link, else a copy;
video frames have none). `yolo/labels/<name>.txt`: lines `class x1 y1 x2 y2 ...` (0..1). `yolo/data.yaml`
(`data_yaml`, written by `finalize`) has no `path:` key and `train`/`val` = `images`, so ultralytics resolves
them against the yaml's own folder (its `check_det_dataset` rule): the folder can be moved as a whole.
Class index: position in `real_categories(classes)` (no "N/A" placeholders, sorted by COCO category id).

Points are the centres of the mask's boundary pixels, written as (x + 0.5) / W, (y + 0.5) / H, so that
ultralytics' `polygon2mask` (points times (W, H), truncated to int32, `cv2.fillPoly`: even-odd rule, edges
drawn too) draws exactly the traced pixels (`mrseg.outputs.polygons`, convention "yolo"). YOLO-seg holds one
polygon per instance, so a mask of several parts, or with holes, is one ring (`mask_ring`): every part's and
hole's boundary, unsimplified, joined by straight zero-width bridges walked out and back (as ultralytics' own
COCO converter joins parts), which change no pixel's parity: parts filled, every hole empty, only the bridges'
own pixels drawn in excess. Far-apart parts that would cost more bridge pixels than they bring are left out
(the IoU-best connected set of parts; counted, and warned about at the end of the run). An empty mask is
written as its box, so that every instance has a line.

Models without masks (`box_lines`): a box-only model writes YOLO detection lines `class cx cy w h`; a keypoint
model (also with masks: one line can't hold both) YOLO-pose lines `class cx cy w h x1 y1 v1 ... xK yK vK`
(keypoints divided by the image size as ultralytics' COCO converter does; v = 2 predicted, `0 0 0` not), with
`kpt_shape: [K, 3]`, `flip_idx` (left/right keypoint pairs by name) and `kpt_names` in data.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np

from mrseg.data.augment import keypoint_flip_map
from mrseg.model.coco_classes import real_categories
from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.frames import write_frame
from mrseg.outputs.mask_crop import MaskCrop, instance_crop
from mrseg.outputs.masks import DEFAULT_SIMPLIFY
from mrseg.outputs.paths import output_path, output_stem
from mrseg.outputs.polygons import FIDELITY_IOU, trace_polygons

YOLO_DIR = "yolo"


def yolo_class_index(classes: list[dict]) -> dict[int, int]:
    """COCO category id -> YOLO class index (its position in `real_categories(classes)`)."""
    return {int(c["id"]): i for i, c in enumerate(real_categories(classes))}


def data_yaml(classes: list[dict]) -> str:
    """The text of `yolo/data.yaml` for a model's class list `{"id", "name"}` per label."""
    names = real_categories(classes)
    lines = [
        "# Written by mrseg predict: a YOLO dataset of the predictions (segment, pose or detect labels).",
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


def keypoint_yaml_lines(categories: list[dict]) -> list[str]:
    """data.yaml's YOLO-pose keys (`kpt_shape: [K, 3]`, `flip_idx`, `kpt_names` per class) for categories with
    `keypoints`; none without. YOLO-pose has one K per dataset: other keypoint counts are refused."""
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
    flip = keypoint_flip_map(first)  # by name, as training's flip
    if flip != list(range(len(first))):
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


def _contours(crop: np.ndarray, x: int, y: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The outer boundary `[K, 2]` and hole boundaries of one 8-connected part (bool `crop` at (x, y)), as
    OpenCV traces them: every boundary pixel's centre (unsimplified), in image coordinates."""
    contours, hierarchy = cv2.findContours(
        np.pad(crop.astype(np.uint8), 1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    shift = (x - 1, y - 1)
    outer = [c[:, 0, :] + shift for c, h in zip(contours, hierarchy[0], strict=True) if h[3] < 0]
    holes = [c[:, 0, :] + shift for c, h in zip(contours, hierarchy[0], strict=True) if h[3] >= 0]
    return max(outer, key=len).astype(np.int64), [h.astype(np.int64) for h in holes]


def _segment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pixels `[n, 2]` of the 8-connected straight line from pixel `a` to pixel `b` (both included)."""
    n = int(np.abs(b - a).max())
    if n == 0:
        return a[None].copy()
    t = np.arange(n + 1)[:, None] / n
    return np.floor(a + t * (b - a) + 0.5).astype(np.int64)


class _RingTree:
    """Rings (closed vertex lists `[K, 2]`, int pixel coordinates) joined into a tree at shared vertices: the
    parts' outer boundaries, their holes, and the bridges between them (a bridge is the closed ring
    `a..b..a`, a path walked out and back). `line()` walks the tree into one ring: each ring from the vertex
    where it hangs, around, and back to it, with the rings hanging from a vertex walked when it is reached.
    Under cv2.fillPoly's even-odd fill a bridge, walked both ways, changes no pixel's parity: it only draws
    its own pixels; so the walk fills the parts, leaves the holes empty, and draws the bridges."""

    def __init__(self, root: np.ndarray):
        self.rings = [root]
        self.kids: dict[int, dict[int, list[tuple[int, int]]]] = {}  # ring -> vertex -> (ring, its vertex)

    def hang(self, ring: np.ndarray, parent: int, vertex: int, own_vertex: int = 0) -> int:
        """Hangs `ring` by its vertex `own_vertex` from ring `parent`'s `vertex` (the same pixel); its id."""
        self.rings.append(ring)
        self.kids.setdefault(parent, {}).setdefault(vertex, []).append((len(self.rings) - 1, own_vertex))
        return len(self.rings) - 1

    def line(self) -> np.ndarray:
        """The walk `[K, 2]`."""
        out: list[np.ndarray] = []
        stack: list = [(0, 0)]  # (ring, starting vertex) to walk, or an array of points to emit
        while stack:
            item = stack.pop()
            if isinstance(item, np.ndarray):
                out.append(item)
                continue
            node, start = item
            ring = self.rings[node]
            walk = np.concatenate([ring[start:], ring[:start], ring[start : start + 1]])
            kids = self.kids.get(node, {})
            pieces: list = []
            done = 0
            for t in sorted((v - start) % len(ring) for v in kids):  # the walk to each vertex with rings
                pieces.append(walk[done : t + 1])  # hanging there, then those rings
                pieces.extend(kids[(start + t) % len(ring)])
                done = t + 1
            pieces.append(walk[done:])
            stack.extend(reversed(pieces))
        ring = _compress(np.concatenate(out)[:-1])
        # at least 3 points: ultralytics reads a line of 2 points (5 numbers) as a box
        return np.concatenate([ring, np.repeat(ring[-1:], max(0, 3 - len(ring)), axis=0)])


def _compress(ring: np.ndarray) -> np.ndarray:
    """`ring` without the vertices that change nothing fillPoly draws: repeated points, and points inside a
    straight run along one of the 8 pixel directions (the line through them draws the same pixels)."""
    if len(ring) > 1:
        ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]
    if len(ring) < 3:
        return ring
    d1 = ring - np.roll(ring, 1, axis=0)
    d2 = np.roll(ring, -1, axis=0) - ring

    def straight(d):
        ax, ay = np.abs(d[:, 0]), np.abs(d[:, 1])
        return (ax == 0) | (ay == 0) | (ax == ay)

    keep = ~(straight(d1) & straight(d2) & np.all(np.sign(d1) == np.sign(d2), axis=1))
    return ring[keep] if keep.sum() >= 3 else ring


def _nearest_points(targets: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """For every pixel of a `shape` (h, w) frame, the index of the nearest (Euclidean) of the pixels `targets`
    `[N, 2]` (x, y), int64 `[h, w]`, through one distance transform."""
    h, w = shape
    src = np.full((h, w), 255, np.uint8)
    src[targets[:, 1], targets[:, 0]] = 0
    _, label = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    zeros = np.flatnonzero(src.reshape(-1) == 0)
    point_of_pixel = np.zeros(h * w, np.int64)
    point_of_pixel[targets[:, 1] * w + targets[:, 0]] = np.arange(len(targets))
    point_of_label = np.zeros(int(label.max()) + 1, np.int64)
    point_of_label[label.reshape(-1)[zeros]] = point_of_pixel[zeros]
    return point_of_label[label]


def _spanning_bridges(rings: list[np.ndarray], shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Bridges `(ring a, its vertex, ring b, its vertex)` that join `rings` (`[K, 2]` pixels each, in a
    `shape` frame) into a tree of minimum total length (Kruskal's algorithm on the bridges between rings whose
    cells of the pixel Voronoi diagram of all vertices touch: they hold every minimum spanning tree's)."""
    points = np.concatenate(rings)
    owner = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    near = _nearest_points(points, shape)
    pairs = [
        (near[:, :-1], near[:, 1:]), (near[:-1, :], near[1:, :]),
        (near[:-1, :-1], near[1:, 1:]), (near[:-1, 1:], near[1:, :-1]),
    ]  # fmt: skip
    a = np.concatenate([p.reshape(-1) for p, _ in pairs])
    b = np.concatenate([q.reshape(-1) for _, q in pairs])
    cross = owner[a] != owner[b]
    a, b = a[cross], b[cross]
    length = np.hypot(*(points[a] - points[b]).T)
    order = np.argsort(length, kind="stable")
    lo, hi = np.minimum(owner[a], owner[b])[order], np.maximum(owner[a], owner[b])[order]
    order = order[np.sort(np.unique(lo * len(rings) + hi, return_index=True)[1])]  # shortest per pair
    starts = np.concatenate([[0], np.cumsum([len(r) for r in rings])[:-1]])
    oa, ob = owner[a[order]], owner[b[order]]
    va, vb = a[order] - starts[oa], b[order] - starts[ob]
    edges = zip(length[order], oa.tolist(), va.tolist(), ob.tolist(), vb.tolist(), strict=True)
    return _kruskal(len(rings), edges)


MAX_SEARCH_PARTS = 12  # masks of at most this many parts: also try leaving out parts inside the tree


def _background(path: np.ndarray, crop: np.ndarray) -> int:
    """How many pixels of `path` `[n, 2]` lie outside the mask `crop`."""
    return int((~crop[path[:, 1], path[:, 0]]).sum())


def mask_ring(mask: MaskCrop, simplify: float = DEFAULT_SIMPLIFY) -> tuple[np.ndarray, int]:
    """One YOLO-seg ring `[K, 2]` (pixel indices, image coordinates) for a non-empty mask crop, and how many
    of its parts (8-connected) were left out.

    One part without holes: its simplified outline (`polygons`, convention "yolo"). Otherwise every part's and
    hole's boundary pixels (unsimplified: simplified rings of parts side by side can overlap, which fillPoly's
    even-odd rule would empty), joined into one `_RingTree`: the parts by a minimum spanning tree of bridges,
    each part's holes by a spanning tree of bridges inside the part. A bridge draws its background pixels:
    when the ring with every part draws the mask at an IoU below `FIDELITY_IOU`, the parts kept are the
    connected branch of highest IoU (`_best_branch`; for up to `MAX_SEARCH_PARTS` parts, also the trees
    left when single parts are taken out, again while that helps)."""
    mc = mask.tightened()
    crop = mc.crop
    contours, _ = cv2.findContours(np.pad(crop.astype(np.uint8), 1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 1:  # one part, no hole
        ring = trace_polygons(mc, "yolo", simplify)[0]
        return ring.astype(np.float64), 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    parts = []
    for k in range(1, count):
        x, y, bw, bh, _ = stats[k]
        parts.append(_contours(labels[y : y + bh, x : x + bw] == k, x, y))
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    hole_bridges, hole_cost = [], np.zeros(len(parts))
    for k, (outer, holes) in enumerate(parts):
        x, y, bw, bh, _ = stats[k + 1]
        rings = [r - (x, y) for r in [outer, *holes]]
        found = _spanning_bridges(rings, (bh, bw)) if holes else []
        hole_bridges.append(found)
        for ra, va, rb, vb in found:
            path = _segment(rings[ra][va] + (x, y), rings[rb][vb] + (x, y))
            hole_cost[k] += _background(path, crop)
    outers = [outer for outer, _ in parts]
    nearest = _nearest_pairs(outers, crop.shape) if len(parts) <= MAX_SEARCH_PARTS else None
    best = _kept_parts(outers, list(range(len(parts))), area, hole_cost, crop, nearest)
    if best[0] < FIDELITY_IOU and nearest is not None:
        # a part in the middle of the tree may cost more than it brings while the parts around it do
        # not: try leaving each kept part out of the tree (not only a branch), keep the best, again
        while len(best[1]) > 1:
            trials = [
                _kept_parts(outers, sorted(best[1] - {k}), area, hole_cost, crop, nearest) for k in best[1]
            ]
            trial = max(trials, key=lambda t: t[0])
            if trial[0] <= best[0] * (1 + 1e-12):
                break
            best = trial
    _, keep, bridges = best
    tree = _build(parts, hole_bridges, bridges, keep, area)
    ring = tree.line() + (mc.x0, mc.y0)
    return ring.astype(np.float64), len(parts) - len(keep)


def _nearest_pairs(rings: list[np.ndarray], shape: tuple[int, int]) -> dict:
    """`{(a, b): (length, vertex of a, vertex of b)}`: the shortest bridge between each two of `rings`
    (`[K, 2]` pixels in a `shape` frame), a < b; one distance transform per ring."""
    out = {}
    for a, ring in enumerate(rings[:-1]):
        near = _nearest_points(ring, shape)
        for b in range(a + 1, len(rings)):
            i = near[rings[b][:, 1], rings[b][:, 0]]
            length = np.hypot(*(ring[i] - rings[b]).T)
            j = int(np.argmin(length))
            out[a, b] = (float(length[j]), int(i[j]), j)
    return out


def _kruskal(n: int, edges) -> list[tuple[int, int, int, int]]:
    """The bridges `(a, vertex, b, vertex)` of a minimum spanning tree of `n` rings, from `edges`
    `(length, a, vertex, b, vertex)` in increasing length."""
    group = list(range(n))

    def find(k: int) -> int:
        while group[k] != k:
            group[k] = group[group[k]]
            k = group[k]
        return k

    bridges = []
    for _, a, i, b, j in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            group[ra] = rb
            bridges.append((a, i, b, j))
            if len(bridges) == n - 1:
                break
    return bridges


def _kept_parts(outers, among: list[int], area, hole_cost, crop: np.ndarray, nearest: dict | None):
    """(IoU, kept parts, their bridges): the minimum spanning tree of bridges of the parts `among` (`nearest`:
    their `_nearest_pairs`, or None for one `_spanning_bridges` pass); all of them if that draws the mask at
    IoU >= FIDELITY_IOU, else its best branch (`_best_branch`)."""
    if nearest is None:
        bridges = _spanning_bridges([outers[k] for k in among], crop.shape) if len(among) > 1 else []
    else:
        pairs = sorted((*nearest[a, b], a, b) for a in among for b in among if a < b)
        local = {k: n for n, k in enumerate(among)}
        bridges = _kruskal(len(among), [(d, local[a], i, local[b], j) for d, i, j, a, b in pairs])
    bridges = [(among[a], i, among[b], j) for a, i, b, j in bridges]
    costs = [_background(_segment(outers[a][i], outers[b][j]), crop) for a, i, b, j in bridges]
    iou = area[among].sum() / (area.sum() + sum(costs) + hole_cost[among].sum())
    if iou >= FIDELITY_IOU:
        return iou, set(among), bridges
    keep, iou = _best_branch(among, bridges, costs, area, hole_cost, float(area.sum()))
    return iou, keep, [br for br in bridges if br[0] in keep and br[2] in keep]


def _build(parts, hole_bridges, bridges, keep: set[int], area: np.ndarray) -> _RingTree:
    """The `_RingTree` of the kept parts ((outer boundary, holes) each) from the largest: each part hangs
    by its bridge, each hole by its bridge inside its part."""
    root = max(keep, key=lambda k: area[k])
    tree = _RingTree(parts[root][0])
    node_of = {root: 0}  # part -> the tree ring of its outer boundary
    adj: dict[int, list[tuple[int, int, int]]] = {}
    for a, i, b, j in bridges:
        adj.setdefault(a, []).append((i, b, j))
        adj.setdefault(b, []).append((j, a, i))
    order = [root]
    for k in order:
        node_by_ring = {0: node_of[k]}  # the part's rings (0: outer boundary, r: hole r - 1) -> tree rings
        pending = list(hole_bridges[k])
        while pending:  # a spanning tree: each round hangs the holes bridged to a ring already hung
            for br in list(pending):
                ra, va, rb, vb = br if br[0] in node_by_ring else (br[2], br[3], br[0], br[1])
                if ra in node_by_ring:
                    node_by_ring[rb] = _hang(tree, node_by_ring[ra], va, parts[k][1][rb - 1], vb)
                    pending.remove(br)
        for i, b, j in adj.get(k, []):
            if b not in node_of:
                node_of[b] = _hang(tree, node_of[k], i, parts[b][0], j)
                order.append(b)
    return tree


def _hang(tree: _RingTree, node: int, vertex: int, ring: np.ndarray, at: int) -> int:
    """Hangs `ring` by its vertex `at` from `tree`'s ring `node` at `vertex`, by a bridge; the ring's id."""
    path = _segment(tree.rings[node][vertex], ring[at])
    bridge = tree.hang(np.concatenate([path, path[-2:0:-1]]), node, vertex)
    return tree.hang(ring, bridge, len(path) - 1, at)


def _best_branch(
    among: list[int],
    bridges: list[tuple[int, int, int, int]],
    costs: list[int],
    area: np.ndarray,
    hole_cost: np.ndarray,
    mask_area: float,
) -> tuple[set[int], float]:
    """The parts to keep, and their IoU: the connected branch S of the tree of parts `among` (joined by
    `bridges`, whose drawn background pixels are `costs`) of highest IoU = area(S) / (mask area + costs of S's
    bridges and of its parts' hole bridges). Dinkelbach's method: for the current best ratio t, the branch
    maximising area - t * cost (a tree dynamic programme over every branch), until t stops rising; exact."""
    adj: dict[int, list[tuple[int, float]]] = {k: [] for k in among}
    for (a, _, b, _), c in zip(bridges, costs, strict=True):
        adj[a].append((b, c))
        adj[b].append((a, c))
    root = max(among, key=lambda k: area[k])
    order, up, up_cost = [root], {root: -1}, {root: 0.0}
    for k in order:  # breadth first: each part after the one it hangs from
        for j, c in adj[k]:
            if j not in up:
                up[j], up_cost[j] = k, c
                order.append(j)
    keep, ratio = {root}, area[root] / (mask_area + hole_cost[root])
    while True:
        value = {k: area[k] - ratio * hole_cost[k] for k in order}
        for k in reversed(order):  # children first: add each child branch that pays for its bridge
            gain = value[k] - ratio * up_cost[k]
            if up[k] >= 0 and gain > 0:
                value[up[k]] += gain
        top = max(order, key=value.__getitem__)
        branch, stack = {top}, [top]
        while stack:
            k = stack.pop()
            for j, _ in adj[k]:
                if up[j] == k and value[j] - ratio * up_cost[j] > 0:
                    branch.add(j)
                    stack.append(j)
        cost = sum(hole_cost[k] for k in branch) + sum(up_cost[k] for k in branch if k != top)
        new = sum(area[k] for k in branch) / (mask_area + cost)
        if new <= ratio * (1 + 1e-12):
            return keep, ratio
        keep, ratio = branch, new


def yolo_lines(
    det: Detections,
    instances: list[dict],
    simplify: float = DEFAULT_SIMPLIFY,
    class_index: dict[int, int] | None = None,
    stats: dict | None = None,
) -> list[str]:
    """One YOLO-seg line per instance (6 decimals). `class_index`: category id -> class (`yolo_class_index`;
    None: model label - 1). `stats["parts_left_out"]` counts the mask parts left out (`mask_ring`)."""
    lines = []
    for i, inst in enumerate(instances):
        crop = instance_crop(det.masks, i, det.boxes[i]).tightened() if det.masks is not None else None
        if crop is not None and crop.area > 0:
            ring, left_out = mask_ring(crop, simplify)
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
    """YOLO's normalised `cx cy w h` of an instance's box, clipped to the image."""
    x, y, w, h = instance["bbox"]
    x0, x1 = np.clip([x, x + w], 0.0, width) / width
    y0, y1 = np.clip([y, y + h], 0.0, height) / height
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def box_lines(det: Detections, instances: list[dict], class_index: dict[int, int] | None = None) -> list[str]:
    """One YOLO detection line `class cx cy w h` (normalised, 6 decimals) per instance; with `keypoints` the
    YOLO-pose line: then `x/W y/H v` per keypoint (`0 0 0`: not predicted). `class_index`: as `yolo_lines`."""
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
    """YOLO-pose lines with keypoints, detection lines without masks (`box_lines`), else `yolo_lines`."""
    if det.keypoints is not None or det.masks is None:
        return box_lines(det, instances, class_index)
    return yolo_lines(det, instances, simplify, class_index, stats)


class YoloWriter:
    """Writes `OUT/yolo/labels/<name>.txt` per input (atomically; empty when nothing was found) and links the
    input image to `OUT/yolo/images/<name><ext>` (a video frame: writes it there as `<name>.jpg`).
    `classes`: as data.yaml's; None: class = model label - 1."""

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

    def image_path_for(self, item: InputItem) -> Path:
        """`images/<name><source ext>`; `images/<name>.jpg` for a video frame."""
        suffix = ".jpg" if item.frame is not None else Path(item.path).suffix
        return output_path(self.out_dir, YOLO_DIR, "images", output_stem(item), suffix=suffix)

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        lines = label_lines(det, instances, self.simplify, self.class_index, self.stats)
        atomic_write_text(self.path_for(item), "".join(line + "\n" for line in lines))
        image = self.image_path_for(item)
        if item.frame is not None:
            write_frame(image, item, image_rgb)
        elif os.path.isfile(item.path):
            link_image(item.path, image)

    def close(self) -> None:
        left_out = self.stats.get("parts_left_out", 0)
        if left_out:
            warnings.warn(
                f"yolo: {left_out} mask part(s) were left out of their instance's polygon: YOLO-seg holds "
                "one polygon per instance, and the bridges joining them to the rest would have drawn more "
                "wrong pixels than they bring (the exact masks are in results.json / predictions.jsonl)",
                stacklevel=2,
            )
