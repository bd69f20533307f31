"""`evaluate(..., iou_types=("keypoints",))` is pycocotools' OKS evaluation: on the real COCO val2017 keypoint
sample (its printed figures) and on generated cases (hypothesis) against a fresh `COCOeval(..., "keypoints")`;
and clear errors where pycocotools would fail with a bare KeyError.

Generated ground truths: 1-3 images, 0-4 people each in 1-2 categories, crowd regions, unlabelled keypoints
(v = 0) and people with none labelled, `area` in all three of the keypoint ranges (all, medium, large).
Results in both of pycocotools' reading modes: with a bbox (area = box area) or keypoints only (box and area
from the keypoints' extent); near a person (jittered keypoints) or anywhere, tied scores, images without
detections, a category the ground truth lacks.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrseg.engine.evaluator import KEYPOINT_METRIC_NAMES, EvalInputError, EvalWarning, evaluate

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "coco-keypoints-sample"
# the bbox/segm property test's settings and its pycocotools oracle, one definition
_spec = importlib.util.spec_from_file_location(
    "_mrseg_evaluator_properties", Path(__file__).parent / "test_evaluator_properties.py"
)
_properties = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_properties)
SETTINGS = _properties.SETTINGS
RUNS = {"keypoints": 0}
K = 17


def pycocotools_stats(gt: dict, results: list[dict]) -> np.ndarray:
    return _properties.pycocotools_stats(gt, results, "keypoints")


def test_the_coco_sample_gives_the_figures_pycocotools_printed():
    printed = (SAMPLE / "pycocotools_keypoints_eval.txt").read_text().splitlines()
    expected = json.loads(next(line for line in printed if line.startswith("stats "))[len("stats ") :])
    got = evaluate(
        SAMPLE / "person_keypoints_gt.json", SAMPLE / "person_keypoints_results.json", ("keypoints",)
    )
    assert list(got) == ["keypoints"] and list(got["keypoints"]) == list(KEYPOINT_METRIC_NAMES)
    np.testing.assert_allclose(list(got["keypoints"].values()), expected, rtol=0, atol=1e-12)  # printed to 12
    gt = json.loads((SAMPLE / "person_keypoints_gt.json").read_text())
    results = json.loads((SAMPLE / "person_keypoints_results.json").read_text())
    np.testing.assert_allclose(
        list(got["keypoints"].values()), pycocotools_stats(gt, results), rtol=0, atol=1e-12
    )


def _keypoints(draw, x0: float, y0: float, w: float, h: float, unlabelled: float) -> list[float]:
    out = []
    for _ in range(K):
        if draw(st.floats(0, 1)) < unlabelled:
            out += [0, 0, 0]
        else:
            out += [round(x0 + draw(st.floats(0, 1)) * w, 2), round(y0 + draw(st.floats(0, 1)) * h, 2),
                    draw(st.sampled_from([1, 2]))]  # fmt: skip
    return out


@st.composite
def cases(draw):
    cat_ids = draw(st.lists(st.sampled_from([1, 3]), min_size=1, max_size=2, unique=True))
    images, anns = [], []
    for img_id in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(16, 300)), draw(st.integers(16, 300))
        images.append({"id": 5 + img_id, "file_name": f"{img_id}.jpg", "height": h, "width": w})
        for _ in range(draw(st.integers(0, 4) | st.integers(1, 4))):
            x0, y0 = draw(st.floats(0, w - 8)), draw(st.floats(0, h - 8))
            bw, bh = draw(st.floats(4, w - x0)), draw(st.floats(4, h - y0))
            crowd = draw(st.integers(0, 6)) == 0
            kps = (
                [0] * (3 * K)
                if crowd
                else _keypoints(draw, x0, y0, bw, bh, draw(st.sampled_from([0, 0, 0.3, 1])))
            )
            area = bw * bh * draw(st.sampled_from([0.5, 1.0, 8.0, 40.0]))  # reaches medium and large
            cat = draw(st.sampled_from(cat_ids))
            anns.append({"id": len(anns) + 1, "image_id": images[-1]["id"], "category_id": cat,
                         "bbox": [x0, y0, bw, bh], "area": area, "iscrowd": int(crowd), "keypoints": kps,
                         "num_keypoints": sum(1 for v in kps[2::3] if v > 0)})  # fmt: skip
    categories = [{"id": c, "name": f"c{c}", "keypoints": [f"k{i}" for i in range(K)], "skeleton": []}
                  for c in cat_ids]  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": categories}

    box_mode = draw(st.booleans())
    results = []
    for img in images:
        if draw(st.integers(0, 3)) == 0:
            continue
        own = [a for a in anns if a["image_id"] == img["id"] and a["num_keypoints"] > 0]
        for _ in range(draw(st.integers(1, 6))):
            if own and draw(st.booleans()):  # a jittered copy of a person's labelled keypoints
                a = draw(st.sampled_from(own))
                noise = draw(st.floats(0, 8))
                kps = []
                for x, y, v in zip(
                    a["keypoints"][0::3], a["keypoints"][1::3], a["keypoints"][2::3], strict=True
                ):
                    dx, dy = draw(st.floats(-1, 1)) * noise, draw(st.floats(-1, 1)) * noise
                    kps += [x + dx, y + dy, 1] if v else [draw(st.floats(0, img["width"])), 0.0, 1]
                box = [a["bbox"][0] + noise, a["bbox"][1], a["bbox"][2], max(a["bbox"][3] - noise, 1.0)]
                cat = a["category_id"] if draw(st.integers(0, 4)) else draw(st.sampled_from(cat_ids))
            else:
                x0, y0 = draw(st.floats(0, img["width"] - 4)), draw(st.floats(0, img["height"] - 4))
                bw, bh = draw(st.floats(2, img["width"] - x0)), draw(st.floats(2, img["height"] - y0))
                kps = [v if i % 3 != 2 else 1 for i, v in enumerate(_keypoints(draw, x0, y0, bw, bh, 0))]
                box = [x0, y0, bw, bh]
                cat = draw(st.sampled_from([*cat_ids, 77]))  # 77: a category the ground truth lacks
            det = {"image_id": img["id"], "category_id": cat, "keypoints": kps,
                   "score": draw(st.sampled_from([0.9, 0.5, 0.5]) | st.floats(0.01, 1.0))}  # fmt: skip
            if box_mode:
                det["bbox"] = box
            results.append(det)
    if not results:
        results.append({"image_id": images[0]["id"], "category_id": cat_ids[0], "score": 0.4,
                        "bbox": [0, 0, 5, 5], "keypoints": [1.0, 1.0, 1] * K})  # fmt: skip
    return gt, json.loads(json.dumps(results))


@SETTINGS
@given(cases())
def keypoints_property(case):
    gt, results = case
    expected = pycocotools_stats(gt, results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvalWarning)
        got = evaluate(gt, results, iou_types=("keypoints",))["keypoints"]
    np.testing.assert_allclose(np.array(list(got.values())), expected, rtol=0, atol=1e-12)
    RUNS["keypoints"] += 1


def test_figures_are_pycocotools_on_200_generated_cases():
    before = RUNS["keypoints"]
    keypoints_property()
    assert RUNS["keypoints"] - before >= 200  # every generated pair was compared, none skipped


def _sample():
    gt = json.loads((SAMPLE / "person_keypoints_gt.json").read_text())
    results = json.loads((SAMPLE / "person_keypoints_results.json").read_text())
    return gt, results


def test_boxes_only_results_skip_keypoints_and_bad_keypoints_are_named():
    gt, results = _sample()
    boxes = [{k: v for k, v in d.items() if k != "keypoints"} for d in results]
    assert evaluate(gt, boxes, iou_types=("bbox", "keypoints")).keys() == {"bbox"}
    no_kp_gt = copy.deepcopy(gt)
    for a in no_kp_gt["annotations"]:
        del a["keypoints"]
    assert evaluate(no_kp_gt, results, iou_types=("keypoints",)) == {}
    short = copy.deepcopy(results)
    short[3]["keypoints"] = short[3]["keypoints"][:30]
    with pytest.raises(EvalInputError, match="entry 3 has 10 keypoints; pycocotools' OKS scores COCO's 17"):
        evaluate(gt, short, iou_types=("keypoints",))
    missing = copy.deepcopy(results)
    del missing[5]["keypoints"]
    with pytest.raises(EvalInputError, match="entry 5 has 0 keypoints"):
        evaluate(gt, missing, iou_types=("keypoints",))
    broken = copy.deepcopy(results)
    broken[2]["keypoints"] = [1, 2]
    with pytest.raises(EvalInputError, match="entry 2 has keypoints .* three per keypoint"):
        evaluate(gt, broken, iou_types=("keypoints",))
    no_count = copy.deepcopy(gt)
    del no_count["annotations"][4]["num_keypoints"]
    with pytest.raises(
        EvalInputError, match=f"annotation {no_count['annotations'][4]['id']} has no num_keypoints"
    ):
        evaluate(no_count, results, iou_types=("keypoints",))


def test_keypoints_only_results_are_read_as_pycocotools_reads_them():
    gt, results = _sample()
    bare = [{k: v for k, v in d.items() if k != "bbox"} for d in results]  # box and area from the keypoints
    got = evaluate(gt, bare, iou_types=("keypoints",))["keypoints"]
    assert list(got.values()) == pycocotools_stats(gt, bare).tolist()
    mixed = copy.deepcopy(bare)
    del mixed[7]["keypoints"]
    mixed[7]["bbox"] = [0, 0, 1, 1]
    with pytest.raises(EvalInputError, match="entry 0 has keypoints but entry 7 has none"):
        evaluate(gt, mixed, iou_types=("keypoints",))
