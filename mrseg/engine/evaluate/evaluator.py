"""COCO box, mask and keypoint AP/AR through pycocotools (`evaluate`), with clear errors for bad ground truth
or result files. Every image of the ground truth is scored (an image without results counts as all misses),
as in pycocotools' reference run. iou type "keypoints" is pycocotools' OKS evaluation (its per-keypoint
sigmas, maxDets 20, areas all / medium / large): 10 figures, `KEYPOINT_METRIC_NAMES`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

IOU_TYPES = ("bbox", "segm", "keypoints")
# The order of COCOeval.stats for bbox/segm.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
METRIC_DESCRIPTIONS = {
    "AP": "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP50": "AP @[IoU=0.50 | area=all | maxDets=100]",
    "AP75": "AP @[IoU=0.75 | area=all | maxDets=100]",
    "APs": "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "APm": "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "APl": "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR1": "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR10": "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR100": "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "ARs": "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "ARm": "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "ARl": "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
}
# The order of COCOeval.stats for keypoints (its _summarizeKps), named as the lines pycocotools prints.
KEYPOINT_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
KEYPOINT_METRIC_DESCRIPTIONS = {
    "AP": "AP @[OKS=0.50:0.95 | area=all | maxDets=20]",
    "AP50": "AP @[OKS=0.50 | area=all | maxDets=20]",
    "AP75": "AP @[OKS=0.75 | area=all | maxDets=20]",
    "APm": "AP @[OKS=0.50:0.95 | area=medium | maxDets=20]",
    "APl": "AP @[OKS=0.50:0.95 | area=large | maxDets=20]",
    "AR": "AR @[OKS=0.50:0.95 | area=all | maxDets=20]",
    "AR50": "AR @[OKS=0.50 | area=all | maxDets=20]",
    "AR75": "AR @[OKS=0.75 | area=all | maxDets=20]",
    "ARm": "AR @[OKS=0.50:0.95 | area=medium | maxDets=20]",
    "ARl": "AR @[OKS=0.50:0.95 | area=large | maxDets=20]",
}


def metric_names(iou_type: str) -> tuple[str, ...]:
    """The names of COCOeval.stats, in order, for an iou type."""
    return KEYPOINT_METRIC_NAMES if iou_type == "keypoints" else METRIC_NAMES


def metric_descriptions(iou_type: str) -> dict[str, str]:
    return KEYPOINT_METRIC_DESCRIPTIONS if iou_type == "keypoints" else METRIC_DESCRIPTIONS


class EvalInputError(ValueError):
    """A ground-truth or result file that cannot be evaluated; the message says what is wrong and the fix."""


class EvalWarning(UserWarning):
    """Results that pycocotools scores, but perhaps not as meant (e.g. categories the ground truth lacks)."""


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise EvalInputError(f"{what} file {path!r} does not exist: check the path.")
    if os.path.isdir(path):
        raise EvalInputError(f"{what} file {path!r} is a folder: pass the JSON file itself.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EvalInputError(
            f"{what} file {path!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "was it written completely? Re-create it."
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{what} file {path!r} cannot be read: {e}.") from None


def _name(source: Any, name: str | None = None) -> str:
    """' <file name>' for messages, from `name` or the path; '' for in-memory data without a name."""
    if name is None and isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    return f" {name!r}" if name else ""


def load_ground_truth(
    gt: str | os.PathLike | dict | COCO, verbose: bool = False, name: str | None = None
) -> COCO:
    """A checked pycocotools `COCO` from a COCO dataset JSON path, an already-parsed dict, or a `COCO`."""
    if isinstance(gt, COCO):
        return gt
    name = _name(gt, name)
    data = _read_json(gt, "Ground-truth") if isinstance(gt, (str, os.PathLike)) else gt
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, list):
            hint = " It looks like a results list; pass it as the results, not the ground truth."
        raise EvalInputError(
            f"Ground truth{name} is not a COCO dataset (expected a JSON object with 'images', 'annotations' "
            f"and 'categories', got {type(data).__name__}).{hint}"
        )
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise EvalInputError(
            f"Ground truth{name} lacks the list(s) {', '.join(repr(k) for k in missing)} of a COCO dataset: "
            "pass an instances JSON such as instances_val2017.json."
        )
    if not data["images"]:
        raise EvalInputError(f"Ground truth{name} has no images: there is nothing to evaluate against.")
    sizes: dict[int, tuple[int, int]] = {}  # image id -> (height, width)
    for key, fields in (
        ("images", ("id", "width", "height")),
        ("categories", ("id",)),
        ("annotations", ("id", "image_id", "category_id", "bbox", "area", "iscrowd")),
    ):
        seen: set[int] = set()
        for i, entry in enumerate(data[key]):
            lacking = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if lacking:
                raise EvalInputError(
                    f"Ground truth{name}: {key}[{i}] lacks {', '.join(repr(f) for f in lacking)}; "
                    "a COCO ground truth needs them (fix or regenerate the file)."
                )
            problem = gt_entry_problem(key, entry, seen, sizes)
            if problem:
                raise EvalInputError(
                    f"Ground truth{name}: {key}[{i}] (id {entry.get('id')!r}): {problem}; fix or regenerate "
                    "the file."
                )
    data = copy.deepcopy(data)  # pycocotools' COCOeval rewrites ground-truth segmentations in place
    data.setdefault("info", {})
    coco = COCO()
    coco.dataset = data
    with _quiet(not verbose):
        coco.createIndex()
    return coco


def gt_entry_problem(key: str, entry: dict, seen: set[int], sizes: dict[int, tuple[int, int]]) -> str | None:
    """What makes a ground-truth entry unusable for pycocotools (ids that are not integers or occur twice,
    which its index silently overwrites; sizes, boxes or masks that would crash its C code), or None.
    `seen`: the ids of the section so far; `sizes`: image id -> (height, width), filled from the images."""
    from mrseg.data.coco import as_int, check_segmentation

    ints = {"images": ("id", "width", "height"), "annotations": ("id", "image_id", "category_id")}
    for f in ints.get(key, ("id",)):
        if as_int(entry[f]) is None:
            return f"{f!r} is {entry[f]!r}, not an integer"
    if entry["id"] in seen:
        return f"the id {entry['id']} occurs twice in {key!r}"
    seen.add(as_int(entry["id"]))
    if key == "images":
        if entry["width"] <= 0 or entry["height"] <= 0:
            return f"its size {entry['width']}x{entry['height']} is not positive"
        sizes[as_int(entry["id"])] = (as_int(entry["height"]), as_int(entry["width"]))
    if key != "annotations":
        return None
    bbox, area = entry["bbox"], entry["area"]
    numbers = isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
    if not numbers or not _finite(area):
        return f"bbox {bbox!r} / area {area!r} must be 4 finite numbers / a finite number"
    seg = entry.get("segmentation")
    if seg is None or seg == []:
        return None
    size = sizes.get(as_int(entry["image_id"]))
    if size is None:  # pycocotools never rasterises an annotation of an image it does not score
        return None
    _, reason = check_segmentation(seg, *size)
    if reason in _CRASHING_SEGMENTATIONS:  # the rest pycocotools reads (and scores) as it does
        return f"its segmentation is unusable ({reason})"
    return None


# check_segmentation's reasons for segmentations that crash pycocotools (SIGSEGV for far-out polygons; errors
# from its C code for the others)
_CRASHING_SEGMENTATIONS = (
    "non-numeric polygon",
    "non-finite polygon coordinate",
    "polygon coordinate far outside the image",
    "malformed RLE",
)


def _shown(values: Sequence, most: int) -> str:
    """The first `most` values, comma-separated, with ", ..." when there are more."""
    return ", ".join(map(str, values[:most])) + (", ..." if len(values) > most else "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _number(v) and math.isfinite(v)


def load_results(results: str | os.PathLike | list, name: str | None = None) -> list[dict]:
    """The detections (COCO results format) from a JSON path or an already-parsed list, checked for shape:
    EvalInputError, naming the entry, for what pycocotools' `loadRes` would reject with a bare error."""
    name = _name(results, name)
    data = _read_json(results, "Results") if isinstance(results, (str, os.PathLike)) else results
    if isinstance(data, dict):
        hint = ""
        if "annotations" in data:
            hint = (
                " It looks like a COCO dataset; pass the results list instead"
                " (`mrseg predict --format coco-results` writes results.json)."
            )
        raise EvalInputError(f"Results{name} must be a JSON list of detections, got an object.{hint}")
    if not isinstance(data, list):
        raise EvalInputError(f"Results{name} must be a JSON list of detections, got {type(data).__name__}.")
    if not data:
        raise EvalInputError(
            f"Results{name} is empty: there are no detections to evaluate. "
            "Check that the model found something (lower --score) before evaluating."
        )
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            raise EvalInputError(f"Results{name}: entry {i} is a {type(det).__name__}, not a detection.")
        lacking = [k for k in ("image_id", "category_id", "score") if k not in det]
        located = any(k in det for k in ("bbox", "segmentation", "keypoints"))
        if lacking or not located:
            lacking += [] if located else ["'bbox', 'segmentation' or 'keypoints'"]
            raise EvalInputError(
                f"Results{name}: entry {i} lacks {', '.join(lacking)}; each detection needs image_id, "
                "category_id, score and a bbox [x, y, w, h], a segmentation and/or keypoints (COCO results "
                "format)."
            )
        if not _number(det["score"]):
            raise EvalInputError(f"Results{name}: entry {i} has score {det['score']!r}; expected a number.")
        if "bbox" in det and not (
            isinstance(det["bbox"], (list, tuple))
            and len(det["bbox"]) == 4
            and all(isinstance(v, (int, float)) for v in det["bbox"])
        ):
            raise EvalInputError(f"Results{name}: entry {i} has bbox {det['bbox']!r}; expected [x,y,w,h].")
        if "keypoints" in det and not (
            isinstance(det["keypoints"], list)
            and det["keypoints"]
            and len(det["keypoints"]) % 3 == 0
            and all(map(_number, det["keypoints"]))
        ):
            raise EvalInputError(
                f"Results{name}: entry {i} has keypoints {det['keypoints']!r:.60}; expected a flat list "
                "[x1, y1, v1, x2, y2, v2, ...] of numbers, three per keypoint."
            )
        if "segmentation" in det:
            problem = _segmentation_problem(det["segmentation"])
            if problem:
                raise EvalInputError(
                    f"Results{name}: entry {i} has a segmentation that {problem}; expected RLE "
                    "{'size': [h, w], 'counts': ...} or a list of polygons [[x1, y1, x2, y2, x3, y3, ...]]."
                )
    if "bbox" in data[0]:
        key, what, fix = "bbox", "a bbox", "(or none: then areas and boxes come from the masks)."
    elif "segmentation" in data[0]:
        key, what, fix = "segmentation", "a segmentation", "(or a bbox)."
    else:
        key, what, fix = "keypoints", "keypoints", "(or a bbox)."
    for i, det in enumerate(data):
        if key not in det:
            raise EvalInputError(
                f"Results{name}: entry 0 has {what} but entry {i} has none. pycocotools reads every "
                f"detection the way it reads the first, so give every detection {what} {fix}"
            )
    return data


def _segmentation_problem(segm: Any) -> str | None:
    """Why pycocotools cannot read `segm` as RLE or polygons, or None when it can (its shape only)."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "lacks 'counts' or 'size'"
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            return f"has size {size!r} (expected [height, width])"
        if not isinstance(segm["counts"], (str, bytes, list)):
            return "has counts that are neither an RLE string nor a list of run lengths"
        return None
    if not isinstance(segm, list) or not segm:
        return "is empty" if isinstance(segm, list) else f"is a {type(segm).__name__}"
    for poly in segm:
        if not isinstance(poly, list) or not all(map(_number, poly)):
            return "is not a list of polygons (lists of numbers)"
    if len(segm[0]) < 4:
        return f"starts with a polygon of {len(segm[0])} numbers (a polygon needs at least 3 points)"
    return None


def align_image_ids(gt: COCO, results: list[dict], name: str | None = None) -> tuple[list[dict], str | None]:
    """Results whose every entry has a `file_name` (`mrseg predict`'s results.json, whose `image_id` is its
    own numbering) get the ground truth's id of the image with that file name: the same name, else the one
    ground-truth name ending with it as a path (or that it ends with), else the one with its base name.
    Returns (results, a note when ids changed). EvalInputError names file names that match no image or
    several; results without file names are returned as they are."""
    if not all(isinstance(d.get("file_name"), str) for d in results):
        return results, None
    by_base: dict[str, list[tuple[str, Any]]] = {}  # every candidate shares the base name: one lookup
    for im in gt.dataset["images"]:
        gt_name = str(im.get("file_name", "")).replace("\\", "/")
        by_base.setdefault(gt_name.rsplit("/", 1)[-1], []).append((gt_name, im["id"]))

    def resolve(file_name: str) -> list:
        name = file_name.replace("\\", "/")
        same_base = by_base.get(name.rsplit("/", 1)[-1], [])
        exact = [i for g, i in same_base if g == name]
        tails = [i for g, i in same_base if g.endswith("/" + name) or name.endswith("/" + g)]
        return exact or tails or [i for _, i in same_base]

    ids = {f: resolve(f) for f in {d["file_name"] for d in results}}
    bad = sorted(f for f, found in ids.items() if len(found) != 1)
    if bad:
        what = "; ".join(f"{f!r} ({'no image' if not ids[f] else f'{len(ids[f])} images'})" for f in bad[:5])
        raise EvalInputError(
            f"Results{_name(None, name)}: {len(bad)} file name(s) do not name exactly one image of the "
            f"ground truth: {what}{' ...' if len(bad) > 5 else ''}. Were they predicted on another dataset?"
        )
    moved = sum(d["image_id"] != ids[d["file_name"]][0] for d in results)
    aligned = [{**d, "image_id": ids[d["file_name"]][0]} for d in results]
    note = None
    if moved:
        note = (
            f"{moved} detection(s) of results{_name(None, name)} were matched to the ground truth's images "
            "by file_name: their image_id (mrseg predict's numbering) is not the ground truth's"
        )
    return aligned, note


def check_results_match(gt: COCO, results: Sequence[dict], name: str | None = None) -> list[str]:
    """Raise EvalInputError when results name image ids that the ground truth does not have (pycocotools
    refuses such results), or RLE masks whose size is not their image's. Returns warnings: detections of
    categories that the ground truth lacks, which pycocotools (and so mrseg) leaves unscored."""
    name = _name(None, name)
    known = set(gt.getImgIds())
    unknown = sorted({d["image_id"] for d in results if d["image_id"] not in known}, key=str)
    if unknown:
        count = sum(1 for d in results if d["image_id"] not in known)
        raise EvalInputError(
            f"Results{name}: {count} detection(s) use image ids not in the ground truth "
            f"({len(unknown)} distinct: {_shown(unknown, 5)}). The results must use the ground truth's image "
            "ids; were they predicted on another dataset?"
        )
    for i, det in enumerate(results):
        segm = det.get("segmentation")
        img = gt.imgs[det["image_id"]]
        if isinstance(segm, dict) and list(segm["size"]) != [img["height"], img["width"]]:
            raise EvalInputError(
                f"Results{name}: entry {i} has an RLE mask of size {list(segm['size'])} (height, width) but "
                f"image {det['image_id']} is {img['height']} x {img['width']}; masks must cover their whole "
                "image (were they predicted on resized images?)."
            )
    notes = []
    cats = set(gt.getCatIds())
    unknown = sorted({d["category_id"] for d in results if d["category_id"] not in cats}, key=str)
    if unknown:
        count = sum(1 for d in results if d["category_id"] not in cats)
        notes.append(
            f"{count} detection(s) of results{name} use category ids not in the ground truth "
            f"({_shown(unknown, 5)}); like pycocotools, they are not scored. Were they predicted with "
            "another class list?"
        )
    return notes


def skipped_iou_types(gt: COCO, results: Iterable[dict], iou_types: Sequence[str]) -> dict[str, str]:
    """The requested iou types that are not scored, with the reason: segm when no detection has a mask
    (pycocotools would score each box as a rectangular mask) or when ground-truth annotations have none;
    keypoints when no detection or none of the ground truth's annotations has keypoints."""
    results = list(results)
    skipped = {}
    if "keypoints" in iou_types:
        if not any("keypoints" in d for d in results):
            skipped["keypoints"] = "the results have no keypoints"
        elif gt.dataset["annotations"] and not any("keypoints" in a for a in gt.dataset["annotations"]):
            skipped["keypoints"] = "the ground truth has no keypoints"
    if "segm" in iou_types:
        if not any("segmentation" in d for d in results):
            skipped["segm"] = "the results have no segmentation (boxes only)"
        elif any("segmentation" not in a for a in gt.dataset["annotations"]):
            skipped["segm"] = "the ground truth has annotations without segmentation"
    return skipped


def _quiet(enabled: bool):
    return contextlib.redirect_stdout(io.StringIO()) if enabled else contextlib.nullcontext()


def loadable_results(gt: COCO, results: Sequence[dict], name: str | None = None) -> list[dict]:
    """A deep copy of checked `results` for pycocotools' `COCO.loadRes`. The only change: when the first
    detection has no bbox, loadRes reads every segmentation as compressed RLE (area and box from the mask) and
    fails on polygons or uncompressed RLE, so those become compressed RLE of the same pixels (`annToRLE`)."""
    out = copy.deepcopy(list(results))
    if "bbox" in out[0] or "segmentation" not in out[0]:  # a bbox, or keypoints only
        return out
    for i, det in enumerate(out):
        segm = det["segmentation"]
        if isinstance(segm, dict) and not isinstance(segm["counts"], list):
            continue
        try:
            det["segmentation"] = gt.annToRLE(det)
        except Exception as e:  # pycocotools raises bare Exception/IndexError/TypeError for bad masks
            raise EvalInputError(
                f"Results{_name(None, name)}: entry {i}'s segmentation cannot be read by pycocotools ({e})."
            ) from None
    return out


def evaluate(
    gt: str | os.PathLike | dict | COCO,
    results: str | os.PathLike | list,
    iou_types: Sequence[str] = IOU_TYPES,
    img_ids: Sequence[int] | None = None,
    verbose: bool = False,
    results_name: str | None = None,
) -> dict[str, dict[str, float]]:
    """COCO AP/AR for `results` against the ground truth `gt`: exactly the figures of
    `COCOeval(gt, gt.loadRes(results), iou_type)` for every results file that pycocotools accepts (so, as
    there, when the first detection has a bbox, every detection's area is its box area w*h, also for segm).
    mrseg only adds checks that turn pycocotools' bare errors into messages, and reads polygon or
    uncompressed-RLE masks of results without boxes, which pycocotools refuses (see `loadable_results`).

    Args:
        results: COCO results JSON path or parsed list (image_id, category_id, score, bbox xywh and/or
            segmentation as RLE or polygons).
        iou_types: subset of ("bbox", "segm", "keypoints"). A type the results cannot be scored on (segm
            without segmentations, keypoints without keypoints) is left out of the answer; see
            `skipped_iou_types`.
        img_ids: images to score; default every image of the ground truth.
        verbose: let pycocotools print its progress and summary.
        results_name: the results' file name for error messages when `results` is a list.
    Returns:
        {iou_type: {"AP": .., "AP50": .., ..., "ARl": ..}} for each scored type (`metric_names(iou_type)`),
        values as pycocotools gives them (0..1; -1 where no ground truth falls in the range).
    Raises:
        EvalInputError for missing/malformed files or results that do not match the ground truth.
    Warns:
        EvalWarning for detections of categories that the ground truth lacks (not scored, as in pycocotools)
        and for a segm score where some detections have no mask (pycocotools scores their box as the mask).
    """
    unknown_types = [t for t in iou_types if t not in IOU_TYPES]
    if unknown_types:
        raise EvalInputError(f"Unknown iou type(s) {unknown_types}; choose from {list(IOU_TYPES)}.")
    coco_gt = load_ground_truth(gt, verbose=verbose)
    if results_name is None and isinstance(results, (str, os.PathLike)):
        results_name = os.fspath(results)
    dets = load_results(results, results_name)
    dets, renumbered = align_image_ids(coco_gt, dets, results_name)
    notes = check_results_match(coco_gt, dets, results_name)
    if renumbered:
        notes.append(renumbered)
    skipped = skipped_iou_types(coco_gt, dets, iou_types)
    if "segm" in iou_types and "segm" not in skipped and not all("segmentation" in d for d in dets):
        count = sum("segmentation" not in d for d in dets)
        notes.append(
            f"{count} detection(s) of results{_name(None, results_name)} have a bbox but no segmentation; "
            "like pycocotools, segm scores their box as their mask."
        )
    if "keypoints" in iou_types and "keypoints" not in skipped:
        _check_keypoints(coco_gt, dets, results_name)
    for note in notes:
        warnings.warn(note, EvalWarning, stacklevel=2)
    dets = loadable_results(coco_gt, dets, results_name)
    ids = sorted(coco_gt.getImgIds()) if img_ids is None else list(img_ids)
    metrics: dict[str, dict[str, float]] = {}
    for iou_type in [t for t in iou_types if t not in skipped]:
        with _quiet(not verbose):
            try:
                coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
            except (KeyError, IndexError, TypeError, ValueError, AssertionError) as e:
                raise EvalInputError(
                    f"pycocotools cannot read results{_name(None, results_name)}: {type(e).__name__} {e}."
                ) from None
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
            coco_eval.params.imgIds = ids
            try:
                coco_eval.evaluate()
            except Exception as e:  # e.g. a polygon pycocotools cannot rasterise; no figures either way
                raise EvalInputError(
                    f"pycocotools cannot score results{_name(None, results_name)} ({iou_type}): "
                    f"{type(e).__name__} {e}."
                ) from None
            coco_eval.accumulate()
            coco_eval.summarize()
        names = metric_names(iou_type)
        metrics[iou_type] = {name: float(v) for name, v in zip(names, coco_eval.stats, strict=True)}
    return metrics


def _check_keypoints(gt: COCO, results: Sequence[dict], name: str | None) -> None:
    """EvalInputError where pycocotools' OKS would fail with a bare KeyError or a broadcasting error. It
    compares keypoints only within an image and category that has both detections and ground truth; there,
    every detection and every ground-truth annotation needs its sigmas' count of keypoints (COCO's 17)."""
    count = len(Params(iouType="keypoints").kpt_oks_sigmas)
    gt_pairs = {(a["image_id"], a["category_id"]) for a in gt.dataset["annotations"]}
    det_pairs = {(d["image_id"], d["category_id"]) for d in results}
    for i, det in enumerate(results):
        if (det["image_id"], det["category_id"]) not in gt_pairs:
            continue
        have = len(det.get("keypoints", ())) // 3
        if have != count:
            raise EvalInputError(
                f"Results{_name(None, name)}: entry {i} has {have} keypoints; pycocotools' OKS scores "
                f"COCO's {count} person keypoints ({3 * count} numbers [x, y, v, ...] per detection)."
            )
    for ann in gt.dataset["annotations"]:
        if "num_keypoints" not in ann:  # pycocotools ignores an annotation with none labelled
            raise EvalInputError(
                f"Ground-truth annotation {ann['id']} has no num_keypoints; pycocotools' keypoint evaluation "
                "needs it on every annotation (COCO person_keypoints format)."
            )
        if (ann["image_id"], ann["category_id"]) in det_pairs and len(ann.get("keypoints", ())) != 3 * count:
            have = len(ann.get("keypoints", ())) // 3
            raise EvalInputError(
                f"Ground-truth annotation {ann['id']} (image {ann['image_id']}, category "
                f"{ann['category_id']}) has {have} keypoints; pycocotools' OKS needs {count} on every "
                "annotation it compares with a detection."
            )


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write `data` (metrics, results) as JSON atomically: a temp file in the same folder, then a rename."""
    from mrseg.outputs.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def class_mapping(classes: Sequence[dict], gt: COCO) -> dict[int, int]:
    """Model label (1..K) -> ground-truth category id: by name (case-insensitive) when any name matches, else
    by id. Labels with no counterpart are left out (their detections are not scored)."""
    by_name = {str(c["name"]).lower(): int(c["id"]) for c in gt.dataset["categories"] if "name" in c}
    named = {i + 1: by_name[str(c.get("name", "")).lower()] for i, c in enumerate(classes)
             if str(c.get("name", "")).lower() in by_name}  # fmt: skip
    if named:
        return named
    gt_ids = set(gt.getCatIds())
    return {i + 1: int(c["id"]) for i, c in enumerate(classes) if int(c["id"]) in gt_ids}


def image_paths(gt: COCO, images_dir: str | os.PathLike) -> dict[int, str]:
    """GT image id -> file in `images_dir` (its `file_name`, else its base name there); EvalInputError listing
    the images that are in neither place."""
    found, missing = {}, []
    for img_id in sorted(gt.getImgIds()):
        name = str(gt.imgs[img_id].get("file_name", ""))
        for candidate in (os.path.join(images_dir, name), os.path.join(images_dir, os.path.basename(name))):
            if name and os.path.isfile(candidate):
                found[img_id] = candidate
                break
        else:
            missing.append(name or f"<image id {img_id} has no file_name>")
    if missing:
        raise EvalInputError(
            f"{len(missing)} of the {len(found) + len(missing)} ground-truth images are not in "
            f"{os.fspath(images_dir)!r} ({_shown(missing, 3)}); pass the folder that holds the images named "
            "in the ground truth's file_name."
        )
    return found


def predict_results(
    gt: COCO,
    images_dir: str | os.PathLike,
    predictor: Any,
    on_image: Any = None,
) -> list[dict]:
    """Runs `predictor` (an `mrseg.Predictor`) over every ground-truth image and returns COCO results (boxes
    and RLE masks) with the ground truth's image and category ids. `on_image()` is called after each image."""
    from mrseg.outputs.records import coco_results, instance_records

    mapping = class_mapping(predictor.classes, gt)
    if not mapping:
        raise EvalInputError(
            "none of the model's classes matches a ground-truth category by name or id: "
            f"model {[c.get('name') for c in predictor.classes][:10]}, ground truth "
            f"{[c.get('name') for c in gt.dataset['categories']][:10]}. Evaluate a model of these classes."
        )
    results = []
    for img_id, path in image_paths(gt, images_dir).items():
        det = predictor(path)
        info = gt.imgs[img_id]
        if (det.width, det.height) != (info["width"], info["height"]):
            raise EvalInputError(
                f"{path} is {det.width} x {det.height} pixels but the ground truth says {info['width']} x "
                f"{info['height']} for image id {img_id}; is it the right file (or rotated by its EXIF tag)?"
            )
        records = instance_records(det, predictor.classes, mask_format="rle")
        results += coco_results(img_id, records, det.height, det.width, category_ids=mapping)
        if on_image is not None:
            on_image()
    return results
