"""mrseg.engine.evaluator: pycocotools' reference figures, hand-computable cases, and clear errors."""

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrseg.engine.evaluator import (
    METRIC_NAMES,
    EvalInputError,
    EvalWarning,
    evaluate,
    load_ground_truth,
    skipped_iou_types,
    write_json,
)

COCOAPI = Path(__file__).resolve().parents[1] / "assets" / "cocoapi-val2014-100"


@pytest.mark.parametrize(
    "iou_type,results",
    [
        ("segm", "instances_val2014_fakesegm100_results.json"),
        ("bbox", "instances_val2014_fakebbox100_results.json"),
    ],
)
def test_reproduces_pycocotools_reference_run(iou_type, results, pycocotools_printed):
    expected = pycocotools_printed[iou_type]
    assert len(expected) == 12
    metrics = evaluate(COCOAPI / "instances_val2014_100.json", COCOAPI / results, iou_types=(iou_type,))
    got = [metrics[iou_type][name] for name in METRIC_NAMES]
    assert [f"{v:.3f}" for v in got] == [f"{v:.3f}" for v in expected]


def square_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def make_gt(boxes_per_image, size=(100, 100)):
    """A COCO dataset: image i has the given xywh rectangles (category 1) as polygons."""
    h, w = size
    images, anns = [], []
    for img_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": w, "height": h})
        for box in boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "bbox": list(box),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                    "segmentation": square_polygon(*box),
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }


def rle_of(box, size=(100, 100)):
    m = np.zeros(size, np.uint8, order="F")
    x, y, w, h = box
    m[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


BOXES = [[(10, 10, 40, 40)], [(50, 20, 40, 30), (5, 60, 35, 35)]]


def perfect_results(gt, with_box=True, with_mask=True):
    out = []
    for a in gt["annotations"]:
        det = {"image_id": a["image_id"], "category_id": 1, "score": 0.9}
        if with_box:
            det["bbox"] = a["bbox"]
        if with_mask:
            det["segmentation"] = rle_of(a["bbox"])
        out.append(det)
    return out


def test_perfect_results_score_one_and_missing_image_counts_as_misses():
    gt = make_gt(BOXES)
    metrics = evaluate(gt, perfect_results(gt))
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AR100"] == pytest.approx(1.0)
        assert metrics[iou_type]["APl"] == -1  # no large objects: pycocotools' -1 passes through
    # Drop image 2's detections: 1 of 3 objects found, recall 1/3.
    only_first = [d for d in perfect_results(gt) if d["image_id"] == 1]
    metrics = evaluate(gt, only_first, iou_types=("bbox",))
    assert metrics["bbox"]["AR100"] == pytest.approx(1 / 3)
    # ...unless scoring is restricted to image 1.
    assert evaluate(gt, only_first, iou_types=("bbox",), img_ids=[1])["bbox"]["AP"] == pytest.approx(1.0)


def test_shifted_boxes_hit_at_iou_50_but_miss_at_75():
    gt = make_gt([[(10, 10, 40, 40)]])
    # Shift by 8 px: IoU = 32*40 / (2*1600 - 32*40) = 0.667.
    det = [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.9,
            "bbox": [18, 10, 40, 40],
            "segmentation": rle_of((18, 10, 40, 40)),
        }
    ]
    metrics = evaluate(gt, det)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP50"] == pytest.approx(1.0)
        assert metrics[iou_type]["AP75"] == 0.0


def pycocotools_stats(gt: dict, results: list, iou_type: str) -> list[float]:
    """The oracle: pycocotools' own loadRes + COCOeval on fresh copies, as its README runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return [float(v) for v in ev.stats]


def test_segm_area_ranges_are_pycocotools_box_areas_when_results_have_boxes():
    """The issue's case: jittered polygons with boxes. pycocotools sorts a detection into small/medium/large
    by its box area when it has a box; mrseg used the mask area and differed in APs/APm/APl."""
    gt = make_gt([[(10, 10, 30, 30), (45, 45, 40, 40)], [(5, 5, 60, 60)]])  # sizes around 32^2 and 96^2 px
    results = []
    for k, a in enumerate(gt["annotations"]):
        x, y, w, h = a["bbox"]
        poly = [[x + 2, y, x + w, y + 1, x + w - 1, y + h, x, y + h - 2]]  # a jittered outline
        box = [x - 1, y - 1, w * 1.6, h * 1.6]  # a loose box: w*h crosses a size range
        results.append({"image_id": a["image_id"], "category_id": 1, "score": 0.9 - 0.1 * k, "bbox": box,
                        "segmentation": poly})  # fmt: skip
    # A false positive with a small mask but a medium box:
    results.append({"image_id": 1, "category_id": 1, "score": 0.95, "bbox": [60, 0, 35, 35],
                    "segmentation": [[60, 0, 70, 0, 70, 10, 60, 10]]})  # fmt: skip
    for iou_type in ("segm", "bbox"):
        expected = pycocotools_stats(gt, results, iou_type)
        got = evaluate(gt, results, iou_types=(iou_type,))[iou_type]
        np.testing.assert_allclose([got[n] for n in METRIC_NAMES], expected, rtol=0, atol=1e-12)
    # The figures depend on the rule: without boxes (areas from the masks) they differ.
    no_boxes = [{k: v for k, v in d.items() if k != "bbox"} for d in results]
    mask_areas = evaluate(gt, no_boxes, iou_types=("segm",))["segm"]
    assert [mask_areas[n] for n in METRIC_NAMES] != pycocotools_stats(gt, results, "segm")


def test_ground_truth_and_results_given_as_objects_are_left_unchanged():
    gt = make_gt(BOXES)
    results = perfect_results(gt)
    before = copy.deepcopy((gt, results))
    evaluate(gt, results)
    assert (gt, results) == before


def test_polygon_and_uncompressed_rle_results_equal_compressed_rle():
    gt = make_gt(BOXES)
    rle = perfect_results(gt, with_box=False)
    poly = [
        dict(d, segmentation=square_polygon(*a["bbox"])) for d, a in zip(rle, gt["annotations"], strict=True)
    ]
    expected = evaluate(gt, rle)
    assert evaluate(gt, poly) == expected
    assert set(expected) == {"bbox", "segm"}  # boxes derived from the masks
    # Shift one polygon so that the figures are not all 1 and the comparison means something.
    poly[0]["segmentation"] = square_polygon(15, 10, 40, 40)
    rle[0]["segmentation"] = rle_of((15, 10, 40, 40))
    assert evaluate(gt, poly)["segm"] == evaluate(gt, rle)["segm"]
    # pycocotools refuses polygons without boxes; on the same masks as RLE it gives mrseg's figures.
    got = evaluate(gt, poly)
    for iou_type in ("bbox", "segm"):
        assert [got[iou_type][n] for n in METRIC_NAMES] == pycocotools_stats(gt, rle, iou_type)
    assert evaluate(gt, rle)["segm"]["AP"] < 1.0


def test_boxes_only_results_skip_segm():
    gt = make_gt(BOXES)
    results = perfect_results(gt, with_mask=False)
    assert skipped_iou_types(load_ground_truth(gt), results, ("bbox", "segm")) == {
        "segm": "the results have no segmentation (boxes only)"
    }
    assert set(evaluate(gt, results)) == {"bbox"}


def test_write_json_round_trip(tmp_path):
    gt = make_gt(BOXES)
    metrics = evaluate(gt, perfect_results(gt))
    out = tmp_path / "sub" / "metrics.json"
    write_json(metrics, out)
    loaded = json.loads(out.read_text())
    assert loaded == metrics
    assert list(loaded["bbox"]) == list(METRIC_NAMES)
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda r: r.__setitem__(0, dict(r[0], image_id=999)), r"image ids not in the ground truth.*999"),
        (lambda r: r[1].pop("bbox"), r"entry 0 has a bbox but entry 1 has none"),
        (lambda r: r[0].pop("bbox") and r[1].pop("segmentation"), r"entry 0 has a segmentation but entry 1"),
        (lambda r: r[2].__setitem__("segmentation", []), r"entry 2 has a segmentation that is empty"),
        (lambda r: r[2].__setitem__("segmentation", [[1, 2]]), r"entry 2 .* polygon of 2 numbers"),
        (lambda r: r[0].__setitem__("segmentation", {"counts": "x"}), r"entry 0 .* lacks 'counts' or 'size'"),
        (
            lambda r: r[1].__setitem__("segmentation", rle_of((1, 1, 2, 2), (50, 100))),
            r"entry 1 has an RLE mask of size \[50, 100\]",
        ),
        (lambda r: r[0].__setitem__("score", "high"), r"entry 0 has score 'high'"),
        (lambda r: r.clear(), r"is empty"),
        (lambda r: r[0].pop("score"), r"entry 0 lacks score"),
        (lambda r: r[2].pop("bbox") and r[2].pop("segmentation"), r"entry 2 lacks 'bbox', 'segmentation' or"),
        (lambda r: r[1].__setitem__("bbox", [1, 2, 3]), r"entry 1 has bbox \[1, 2, 3\]"),
    ],
)
def test_bad_results_name_file_and_problem(tmp_path, mutate, pattern):
    gt = make_gt(BOXES)
    results = perfect_results(gt)
    mutate(results)
    path = write(tmp_path, "res.json", results)
    with pytest.raises(EvalInputError, match=pattern) as info:
        evaluate(gt, path)
    assert "res.json" in str(info.value)


def test_bad_files_give_clear_errors(tmp_path):
    gt = make_gt(BOXES)
    gt_path = write(tmp_path, "gt.json", gt)
    good = write(tmp_path, "good.json", perfect_results(gt))
    cases = [
        (gt_path, tmp_path / "nope.json", r"Results file '.*nope.json' does not exist"),
        (
            gt_path,
            write(tmp_path, "trunc.json", '[{"image_id": 1,'),
            r"'.*trunc.json' is not valid JSON \(line 1",
        ),
        (gt_path, gt_path, r"got an object. It looks like a COCO dataset"),
        (tmp_path / "missing_gt.json", good, r"Ground-truth file '.*missing_gt.json' does not exist"),
        (good, good, r"Ground truth '.*good.json' is not a COCO dataset.*results list"),
        (
            write(tmp_path, "noimg.json", {"annotations": []}),
            good,
            r"lacks the list\(s\) 'images', 'categories'",
        ),
        (
            write(tmp_path, "gt_bad.json", dict(gt, annotations=[{"id": 1}])),
            good,
            r"annotations\[0\] lacks 'image_id'",
        ),
        (tmp_path, good, r"is a folder"),
    ]
    for gt_arg, res_arg, pattern in cases:
        with pytest.raises(EvalInputError, match=pattern):
            evaluate(gt_arg, res_arg)
    with pytest.raises(EvalInputError, match="Unknown iou type"):
        evaluate(gt_path, good, iou_types=("keypoint",))


def test_unknown_categories_are_a_warning_and_left_unscored_as_in_pycocotools():
    gt = make_gt(BOXES)
    results = perfect_results(gt)
    results[1]["category_id"] = 7
    with pytest.warns(
        EvalWarning, match=r"1 detection\(s\) of results use category ids not in the ground truth \(7\)"
    ):
        got = evaluate(gt, results)
    for iou_type in ("bbox", "segm"):
        assert [got[iou_type][n] for n in METRIC_NAMES] == pycocotools_stats(gt, results, iou_type)
    assert got["bbox"]["AR100"] == pytest.approx(2 / 3)


def test_some_results_without_mask_score_their_box_as_in_pycocotools():
    gt = make_gt(BOXES)
    results = perfect_results(gt)
    results[2].pop("segmentation")
    results[2]["bbox"] = [5, 60, 30, 35]  # slightly off, so that the box-as-mask matters
    with pytest.warns(EvalWarning, match=r"1 detection\(s\) .* have a bbox but no segmentation"):
        got = evaluate(gt, results, iou_types=("segm",))
    assert [got["segm"][n] for n in METRIC_NAMES] == pycocotools_stats(gt, results, "segm")


def own_predictions_as_ground_truth(tmp_path, predictor, names, annotate=True):
    """Three synthetic pictures in tmp_path/images and a ground truth made of the predictor's own detections
    (none with annotate=False), with category ids unlike the model's (so that classes must match by name)."""
    import cv2

    from mrseg.export.exporter import synthetic_image
    from mrseg.outputs.records import instance_records

    (tmp_path / "images").mkdir()
    images, anns = [], []
    categories = [{"id": 10 * (i + 1), "name": c["name"]} for i, c in enumerate(predictor.classes)]
    for img_id, name in zip((7, 3, 5), names, strict=True):
        rgb = synthetic_image(96, 128, seed=img_id)
        cv2.imwrite(str(tmp_path / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append({"id": img_id, "file_name": f"sub/{name}", "width": 128, "height": 96})
        for rec in instance_records(predictor(rgb), predictor.classes, mask_format="rle") if annotate else []:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 10 * rec["label"],
                         "bbox": rec["bbox"], "area": rec["area"], "segmentation": rec["segmentation"],
                         "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": categories}


def test_model_scored_on_its_own_predictions(tmp_path, tiny_model, tiny_classes):
    from mrseg.engine.evaluator import predict_results
    from mrseg.engine.predictor import Predictor

    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.05)
    gt = own_predictions_as_ground_truth(tmp_path, predictor, ["a.png", "b.png", "c.png"])
    assert len(gt["annotations"]) >= 3
    coco = load_ground_truth(gt)
    results = predict_results(coco, tmp_path / "images", predictor)  # found by base name: file_name has sub/
    assert {r["category_id"] for r in results} == {a["category_id"] for a in gt["annotations"]}
    metrics = evaluate(coco, results)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AR100"] == pytest.approx(1.0)
    # One more object of the first category, which nothing predicts: its recall drops to n / (n + 1).
    first = gt["categories"][0]["id"]
    n = sum(a["category_id"] == first for a in gt["annotations"])
    extra = {"bbox": [0, 0, 2, 2], "area": 4, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}
    gt["annotations"].append(dict(gt["annotations"][0], id=999, image_id=7, category_id=first, **extra))
    used = len({a["category_id"] for a in gt["annotations"]})
    expected = (used - 1 + n / (n + 1)) / used
    assert evaluate(gt, results, iou_types=("bbox",))["bbox"]["AR100"] == pytest.approx(expected)


def test_model_mode_errors(tmp_path, tiny_model, tiny_classes):
    from mrseg.engine.evaluator import predict_results
    from mrseg.engine.predictor import Predictor

    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.05)
    gt = own_predictions_as_ground_truth(tmp_path, predictor, ["a.png", "b.png", "c.png"], annotate=False)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(EvalInputError, match=r"1 of the 3 ground-truth images are not in .*sub/b.png"):
        predict_results(load_ground_truth(gt), tmp_path / "images", predictor)
    gt["images"] = [dict(gt["images"][0], width=50)]
    with pytest.raises(EvalInputError, match="is 128 x 96 pixels but the ground truth says 50 x 96"):
        predict_results(load_ground_truth(gt), tmp_path / "images", predictor)
    gt["categories"] = [{"id": 77, "name": "zebra"}]
    with pytest.raises(EvalInputError, match="none of the model's classes matches"):
        predict_results(load_ground_truth(gt), tmp_path / "images", predictor)
