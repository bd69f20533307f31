"""`mrseg eval`: table, --json, --iou-type, and fatal errors as messages with exit status 1."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrseg.cli import main
from mrseg.engine.evaluate.evaluator import METRIC_NAMES, evaluate

COCOAPI = Path(__file__).resolve().parents[1] / "assets" / "cocoapi-val2014-100"


def rle_of(box, size=(64, 64)):
    m = np.zeros(size, np.uint8)
    x, y, w, h = box
    m[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


@pytest.fixture
def files(tmp_path):
    """gt.json with two boxes; res.json finding one exactly and one 6 px off (IoU 0.62)."""
    gt = {
        "images": [{"id": 3, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 5, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0,
             "segmentation": [[4, 4, 24, 4, 24, 24, 4, 24]]},
            {"id": 2, "image_id": 3, "category_id": 5, "bbox": [30, 30, 30, 30], "area": 900, "iscrowd": 0,
             "segmentation": [[30, 30, 60, 30, 60, 60, 30, 60]]},
        ],
        "categories": [{"id": 5, "name": "nut"}],
    }  # fmt: skip
    boxes = [(4, 4, 20, 20), (24, 30, 30, 30)]
    res = [
        {"image_id": 3, "category_id": 5, "score": s, "bbox": list(b), "segmentation": rle_of(b)}
        for s, b in zip((0.9, 0.8), boxes, strict=True)
    ]
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    return gt_path, res_path


def run(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def test_table_and_json_match_library(files, tmp_path):
    gt, res = files
    out = tmp_path / "m.json"
    result = run("--coco", gt, "--pred", res, "--json", out)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written == evaluate(gt, res)
    assert written["bbox"]["AP50"] == pytest.approx(1.0) and written["bbox"]["AP75"] < 1.0
    ap_row = next(line for line in result.output.splitlines() if line.split("│")[1:2] == [" AP     "])
    assert f"{100 * written['bbox']['AP']:.1f}" in ap_row and f"{100 * written['segm']['AP']:.1f}" in ap_row
    assert "loading annotations" not in result.output  # pycocotools' chatter is silenced


def test_iou_type_selects_and_boxes_only_skips_segm_with_note(files, tmp_path):
    gt, res = files
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(
        json.dumps([{k: v for k, v in d.items() if k != "segmentation"} for d in json.loads(res.read_text())])
    )
    out = tmp_path / "m.json"
    result = run("--coco", gt, "--pred", boxes_only, "--iou-type", "bbox,segm", "--json", out)
    assert result.exit_code == 0, result.output
    assert "segm not evaluated: the results have no segmentation" in result.output
    assert set(json.loads(out.read_text())) == {"bbox"}
    result = run("--coco", gt, "--pred", boxes_only, "--json", out)  # auto: what the results hold
    assert result.exit_code == 0 and "not evaluated" not in result.output, result.output
    assert set(json.loads(out.read_text())) == {"bbox"}
    result = run("--coco", gt, "--pred", res, "--json", out)
    assert set(json.loads(out.read_text())) == {"bbox", "segm"}
    result = run("--coco", gt, "--pred", res, "--iou-type", "segm", "--json", out)
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())) == {"segm"}
    result = run("--coco", gt, "--pred", boxes_only, "--iou-type", "segm")
    assert result.exit_code == 1 and "Nothing to evaluate" in result.output


def test_bad_usage_exits_2(files):
    gt, res = files
    assert run("--coco", gt, "--pred", res, "--iou-type", "bbox,mask").exit_code == 2
    result = run("--coco", gt)
    assert result.exit_code == 2 and "--pred" in result.output


def test_fatal_errors_exit_1_without_traceback(files, tmp_path):
    gt, res = files
    wrong_ids = tmp_path / "wrong.json"
    wrong_ids.write_text(json.dumps([dict(d, image_id=42) for d in json.loads(res.read_text())]))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    for args, message in [
        (("--coco", gt, "--pred", wrong_ids), "2 detection(s) use image ids not in the ground truth"),
        (("--coco", gt, "--pred", empty), "is empty"),
        (("--coco", gt, "--pred", broken), "is not valid JSON"),
        (("--coco", tmp_path / "none.json", "--pred", res), "does not exist"),
        (("--coco", broken, "--pred", res), "is not valid JSON"),
    ]:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def pycocotools_stats(gt_path: Path, results_path: Path, iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize(
    "iou_type,results",
    [
        ("segm", "instances_val2014_fakesegm100_results.json"),
        ("bbox", "instances_val2014_fakebbox100_results.json"),
    ],
)
def test_reference_run_through_the_cli(tmp_path, iou_type, results, pycocotools_printed):
    """`python -m mrseg eval` on the COCO API's fake results prints and writes pycocotools' own figures."""
    out = tmp_path / "m.json"
    gt = COCOAPI / "instances_val2014_100.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mrseg", "eval", "--coco", str(gt), "--pred", str(COCOAPI / results),
         "--iou-type", iou_type, "--json", str(out)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(out.read_text())[iou_type][name] for name in METRIC_NAMES]
    printed = pycocotools_printed[iou_type]
    assert [f"{v:.3f}" for v in got] == [f"{v:.3f}" for v in printed]
    np.testing.assert_allclose(got, pycocotools_stats(gt, COCOAPI / results, iou_type), rtol=0, atol=1e-12)
    assert f"{100 * got[0]:.1f}" in proc.stdout


def test_unknown_category_is_a_note_and_mixed_boxes_an_error(files, tmp_path):
    gt, res = files
    dets = json.loads(res.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps([dets[0], dict(dets[1], category_id=99)]))
    result = run("--coco", gt, "--pred", other)
    assert result.exit_code == 0, result.output
    assert "note:" in result.output and "category ids not in the ground truth (99)" in result.output
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([dets[0], {k: v for k, v in dets[1].items() if k != "bbox"}]))
    result = run("--coco", gt, "--pred", mixed)
    assert result.exit_code == 1 and "entry 0 has a bbox but entry 1 has none" in result.output


def test_images_and_weights_mode(tiny_weights, tmp_path):
    import cv2

    from mrseg.engine.predict.predictor import Predictor
    from mrseg.export.exporter import synthetic_image
    from mrseg.outputs.records import instance_records

    predictor = Predictor(weights=str(tiny_weights), device="cpu", score=0.05)
    (tmp_path / "imgs").mkdir()
    images, anns = [], []
    for img_id in (1, 2):
        rgb = synthetic_image(96, 128, seed=img_id)
        cv2.imwrite(str(tmp_path / "imgs" / f"{img_id}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": 128, "height": 96})
        for rec in instance_records(predictor(rgb), predictor.classes, mask_format="rle"):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, iscrowd=0, **{k: rec[k] for k in
                             ("category_id", "bbox", "area", "segmentation")}))  # fmt: skip
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": predictor.classes}))
    out, pred = tmp_path / "m.json", tmp_path / "pred.json"
    result = run("--coco", gt, "--images", tmp_path / "imgs", "--weights", tiny_weights, "--device", "cpu",
                 "--json", out, "--save-pred", pred)  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)
    assert evaluate(gt, pred) == metrics  # the saved results score the same through --pred
    both = run("--coco", gt, "--pred", pred, "--images", tmp_path / "imgs", "--weights", tiny_weights)
    assert both.exit_code == 2
    assert run("--coco", gt, "--images", tmp_path / "imgs").exit_code == 2
    result = run("--coco", gt, "--images", tmp_path, "--weights", tiny_weights, "--device", "cpu")
    assert result.exit_code == 1 and "ground-truth images are not in" in result.output


KEYPOINTS = Path(__file__).resolve().parents[1] / "assets" / "coco-keypoints-sample"


def test_keypoints_through_the_cli(tmp_path):
    """`mrseg eval --iou-type bbox,keypoints` on the real COCO keypoint sample: both tables, and --json with
    pycocotools' 10 OKS figures (as it printed them) under "keypoints"."""
    out = tmp_path / "m.json"
    gt, res = KEYPOINTS / "person_keypoints_gt.json", KEYPOINTS / "person_keypoints_results.json"
    result = run("--coco", gt, "--pred", res, "--json", out)  # auto: keypoint results are scored as such
    assert result.exit_code == 0 and set(json.loads(out.read_text())) == {"bbox", "keypoints"}, result.output
    result = run("--coco", gt, "--pred", res, "--iou-type", "bbox,keypoints", "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["bbox", "keypoints"]
    assert list(metrics["keypoints"]) == [
        "AP",
        "AP50",
        "AP75",
        "APm",
        "APl",
        "AR",
        "AR50",
        "AR75",
        "ARm",
        "ARl",
    ]
    printed = (KEYPOINTS / "pycocotools_keypoints_eval.txt").read_text()
    stats = json.loads(next(line for line in printed.splitlines() if line.startswith("stats "))[6:])
    np.testing.assert_allclose(list(metrics["keypoints"].values()), stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        list(metrics["bbox"].values()), pycocotools_stats(gt, res, "bbox"), rtol=0, atol=1e-12
    )
    assert "COCO keypoints (x100)" in result.output and "OKS=0.50:0.95" in result.output
    assert f"{100 * stats[0]:.1f}" in result.output  # 50.5


def test_keypoints_of_boxes_only_results_is_a_note(files, tmp_path):
    gt, res = files
    result = run("--coco", gt, "--pred", res, "--iou-type", "bbox,keypoints")
    assert result.exit_code == 0, result.output
    assert "keypoints not evaluated: the results have no keypoints" in result.output


def test_predict_results_are_matched_to_the_ground_truth_by_file_name(tiny_weights, nuts_images, tmp_path):
    """`mrseg predict` numbers images 1..N itself; a ground truth numbers them its own way (here 30, 20, 10,
    under a folder prefix). eval matches results.json to it by file_name: the run's own detections taken as
    the ground truth score what pycocotools gives with the ids mapped by hand (AP > 0.9); without file names
    the ids would have scored other images (or been refused)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in nuts_images[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    args = ["predict", str(folder), "--weights", str(tiny_weights), "--out", str(out), "--workers", "0", "-q"]
    args += ["--score", "0.2", "--format", "coco,coco-results", "--mask-format", "rle"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "annotations.json").read_text())
    assert len(run["annotations"]) >= 3
    new_id = {im["id"]: 10 * (len(run["images"]) - k) for k, im in enumerate(run["images"])}
    gt = {
        "images": [
            {**im, "id": new_id[im["id"]], "file_name": "photos/" + im["file_name"]} for im in run["images"]
        ],
        "annotations": [{**a, "image_id": new_id[a["image_id"]], "iscrowd": 0} for a in run["annotations"]],
        "categories": run["categories"],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = json.loads((out / "results.json").read_text())
    assert all(r["file_name"] in {im["file_name"] for im in run["images"]} for r in results)
    args = ["eval", "--coco", str(tmp_path / "gt.json"), "--pred", str(out / "results.json")]
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "matched to the ground truth's images by file_name" in result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    by_hand = [{**r, "image_id": new_id[r["image_id"]]} for r in results]
    coco_gt = COCO(str(tmp_path / "gt.json"))
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            oracle = COCOeval(coco_gt, coco_gt.loadRes(by_hand), iou_type)
            oracle.evaluate(), oracle.accumulate(), oracle.summarize()
        assert [metrics[iou_type][k] for k in METRIC_NAMES] == oracle.stats.tolist()
        assert metrics[iou_type]["AP"] > 0.9  # its own detections as the ground truth

    (tmp_path / "other.json").write_text(json.dumps([{**r, "file_name": "elsewhere/x.png"} for r in results]))
    result = CliRunner().invoke(main, ["eval", "--coco", str(tmp_path / "gt.json"), "--pred",
                                       str(tmp_path / "other.json")])  # fmt: skip
    assert result.exit_code == 1 and "'elsewhere/x.png' (no image)" in result.output
