"""Property test: `evaluate` gives pycocotools' 12 figures for any results file pycocotools accepts.

Hypothesis draws small COCO ground truths (1-3 images of 8..120 px, 0-4 objects each, 1-3 categories with
non-contiguous ids, polygon / RLE / uncompressed-RLE crowd masks, `area` fields that reach all three size
ranges) and results in both of pycocotools' reading modes: the first detection has a bbox (every area is then
the box area; masks as polygons, RLE, uncompressed RLE or absent) or it has none (compressed RLE, area and box
from the mask; later detections may still carry a bbox). Detections may be missing on some images, have tied
scores, carry an `area` pycocotools overwrites, or use a category the ground truth lacks. The oracle is
pycocotools itself: a fresh `COCO`, `loadRes`, `COCOeval` per iou type, exactly as its README runs it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrseg.engine.evaluate.evaluator import EvalWarning, evaluate

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RUNS = {"bbox": 0, "segm": 0}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """{'size': [h, w], 'counts': [runs]}: column-major run lengths starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": [int(r) for r in runs]}


@st.composite
def shapes(draw, h: int, w: int):
    """(polygon [x1, y1, ...] in pixel coordinates, its mask bool [h, w]) for a rectangle or a triangle."""
    x0 = draw(st.integers(0, w - 1))
    y0 = draw(st.integers(0, h - 1))
    x1 = draw(st.integers(x0 + 1, w))
    y1 = draw(st.integers(y0 + 1, h))
    if draw(st.booleans()):
        poly = [x0, y0, x1, y0, x1, y1, x0, y1]
    else:
        poly = [x0, y0, x1, y0 + (y1 - y0) / 2, x0 + 0.5, y1]
    poly = [float(v) for v in poly]
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)
    return poly, mask


def encode(poly: list[float], mask: np.ndarray, kind: str):
    if kind == "polygon":
        return [poly]
    if kind == "uncompressed":
        return uncompressed_rle(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@st.composite
def cases(draw, need_mask: bool = False):
    """(ground-truth dict, results list) that pycocotools' loadRes and COCOeval accept; with `need_mask`, at
    least one detection has a segmentation (else mrseg leaves segm out, see test_evaluator.py)."""
    cat_ids = draw(st.lists(st.sampled_from([1, 2, 5, 9]), min_size=1, max_size=3, unique=True))
    n_images = draw(st.integers(1, 3))
    images, anns, masks = [], [], {}
    for img_id in range(n_images):
        h, w = draw(st.integers(8, 120)), draw(st.integers(8, 120))
        images.append({"id": 10 + img_id, "file_name": f"{img_id}.png", "height": h, "width": w})
        for _ in range(draw(st.integers(0, 4))):
            poly, mask = draw(shapes(h, w))
            crowd = draw(st.integers(0, 5)) == 0
            kind = "uncompressed" if crowd else draw(st.sampled_from(["polygon", "polygon", "rle"]))
            box = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
            area = float(mask.sum()) * draw(st.sampled_from([1.0, 1.0, 4.0, 30.0]))  # all three ranges
            cat = draw(st.sampled_from(cat_ids))
            anns.append({"id": len(anns) + 1, "image_id": 10 + img_id, "category_id": cat,
                         "bbox": [float(v) for v in box], "area": area, "iscrowd": int(crowd),
                         "segmentation": encode(poly, mask, kind)})  # fmt: skip
            masks[anns[-1]["id"]] = mask
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}

    box_mode = draw(st.booleans())
    results = []
    for img in images:
        if draw(st.integers(0, 3)) == 0:
            continue  # an image without detections
        h, w = img["height"], img["width"]
        own = [a for a in anns if a["image_id"] == img["id"]]
        for _ in range(draw(st.integers(1, 5))):
            if own and draw(st.booleans()):  # near a ground-truth object: jitter its box, reuse its mask
                a = draw(st.sampled_from(own))
                mask = masks[a["id"]]
                ys, xs = np.nonzero(mask)
                poly = [
                    float(v) for v in (xs.min(), ys.min(), xs.max() + 1, ys.min(), xs.max() + 1, ys.max() + 1)
                ]
                poly += [float(xs.min()), float(ys.max() + 1)]
                cat = a["category_id"] if draw(st.integers(0, 4)) else draw(st.sampled_from(cat_ids))
                jitter = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=4, max_size=4))
                box = [a["bbox"][0] + jitter[0], a["bbox"][1] + jitter[1],
                       max(a["bbox"][2] + jitter[2], 0.5), max(a["bbox"][3] + jitter[3], 0.5)]  # fmt: skip
            else:
                poly, mask = draw(shapes(h, w))
                cat = draw(st.sampled_from([*cat_ids, 77]))  # 77: a category the ground truth lacks
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                box = [float(v) for v in mask_utils.toBbox(rle)]
                box = [box[0], box[1], box[2] * draw(st.sampled_from([1.0, 1.0, 5.0])), box[3]]
            det = {"image_id": img["id"], "category_id": cat,
                   "score": draw(st.sampled_from([0.9, 0.5, 0.5, 0.1]) | st.floats(0.01, 1.0))}  # fmt: skip
            first = not results
            if box_mode:
                det["bbox"] = box
                if draw(st.integers(0, 4)):
                    kind = draw(st.sampled_from(["polygon", "rle", "uncompressed"]))
                    det["segmentation"] = encode(poly, mask, kind)
            else:
                det["segmentation"] = encode(poly, mask, "rle")
                if not first and draw(st.booleans()):
                    det["bbox"] = box  # pycocotools keeps a later detection's own bbox in this mode
            if draw(st.integers(0, 3)) == 0:
                det["area"] = 12345.0  # overwritten by pycocotools
            results.append(det)
    if not results:  # pycocotools cannot read an empty list
        img = images[0]
        results.append({"image_id": img["id"], "category_id": cat_ids[0], "score": 0.3,
                        "bbox": [0.0, 0.0, 4.0, 4.0], "segmentation": [[0, 0, 4, 0, 4, 4]]})  # fmt: skip
    if need_mask and not any("segmentation" in d for d in results):
        results[0]["segmentation"] = [[0.0, 0.0, 3.0, 0.0, 3.0, 5.0, 0.0, 5.0]]
    return gt, json.loads(json.dumps(results))


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def check(case, iou_type: str) -> None:
    gt, results = case
    expected = pycocotools_stats(gt, results, iou_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvalWarning)
        got = evaluate(gt, results, iou_types=(iou_type,))[iou_type]
    np.testing.assert_allclose(np.array(list(got.values())), expected, rtol=0, atol=1e-12)
    RUNS[iou_type] += 1


@SETTINGS
@given(cases())
def bbox_property(case):
    check(case, "bbox")


@SETTINGS
@given(cases(need_mask=True))
def segm_property(case):
    check(case, "segm")


@pytest.mark.parametrize("iou_type,prop", [("bbox", bbox_property), ("segm", segm_property)])
def test_figures_are_pycocotools_on_200_generated_cases(iou_type, prop):
    before = RUNS[iou_type]
    prop()
    assert RUNS[iou_type] - before >= 200  # every generated pair was compared, none skipped
