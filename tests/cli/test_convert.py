"""`mrseg convert` round trips, checked with the consumers' own libraries (pycocotools `annToMask`, labelme's
`shape_to_mask`, ultralytics' `polygon2mask` and `check_det_dataset`), never with our readers' masks.

COCO sources: tests/assets/nuts (with images) and a subset of tests/assets/cocoapi-val2014-100 (no images:
sizes from the json; blank PNGs of those sizes stand in where YOLO needs image files).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO

from mrseg.cli import main
from tests.outputs.consumers import labelme_instances, labelme_mask, yolo_mask

AREA_KINDS = ("polygon", "rectangle", "circle", "mask")  # labelme shapes with an area

ASSETS = Path(__file__).parents[1] / "assets"
NUTS = ASSETS / "nuts" / "trainval.json"
VAL2014 = ASSETS / "cocoapi-val2014-100" / "instances_val2014_100.json"


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _run(*args: str):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def _source_masks(gt: COCO) -> dict[str, list[tuple[str, np.ndarray]]]:
    """file_name -> [(category name, annToMask)] of the non-crowd annotations, in file order."""
    out = defaultdict(list)
    for ann in gt.dataset["annotations"]:
        if not ann.get("iscrowd"):
            name = gt.cats[ann["category_id"]]["name"]
            out[gt.imgs[ann["image_id"]]["file_name"]].append((name, gt.annToMask(ann).astype(bool)))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _check_ious(ious: list[tuple[float, int]]) -> None:
    values = np.array([iou for iou, _ in ious])
    assert values.mean() >= 0.95, f"mean IoU {values.mean():.4f}"
    worst = min((iou for iou, area in ious if area >= 16), default=1.0)
    assert worst >= 0.8, f"min IoU {worst:.4f}"


def _compare_coco(src: COCO, back: COCO) -> list[tuple[float, int]]:
    """IoUs of the round trip's annotations (by image file name, in order) against the source's."""
    want, got = _source_masks(src), _source_masks(back)
    assert {Path(k).name for k in want} <= {Path(k).name for k in got}
    got = {Path(k).name: v for k, v in got.items()}
    ious = []
    for name, instances in want.items():
        back_instances = got[Path(name).name]
        assert [n for n, _ in back_instances] == [n for n, _ in instances]
        ious += [(_iou(m, b), int(m.sum())) for (_, m), (_, b) in zip(instances, back_instances, strict=True)]
    return ious


def _val_subset(tmp: Path, n: int = 30) -> tuple[Path, Path]:
    """The first `n` images of val2014-100 with their annotations, and blank PNGs of their sizes."""
    data = json.loads(VAL2014.read_text())
    data["images"] = data["images"][:n]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = tmp / "val_subset.json"
    path.write_text(json.dumps(data))
    images = tmp / "val_images"
    images.mkdir()
    for im in data["images"]:
        im["file_name"] = str(Path(im["file_name"]).with_suffix(".png"))
        cv2.imwrite(str(images / im["file_name"]), np.zeros((im["height"], im["width"]), np.uint8))
    path.write_text(json.dumps(data))
    return path, images


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("val")
    src, images = _val_subset(tmp)
    done = _run(src, "--to", "labelme,yolo,coco", "--out", tmp / "out", "--images", images)
    assert done.exit_code == 0, done.output
    return {"src": src, "out": tmp / "out", "tmp": tmp}


@pytest.fixture(scope="module")
def nuts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nuts")
    done = _run(NUTS, "--to", "labelme,yolo", "--out", tmp / "out")
    assert done.exit_code == 0, done.output
    return {"src": NUTS, "out": tmp / "out", "tmp": tmp}


@pytest.mark.parametrize("case", ["nuts", "val"])
def test_labelme_files_draw_the_source_masks_in_labelme(case, request):
    run = request.getfixturevalue(case)
    want = _source_masks(_coco(run["src"]))
    ious = []
    for file_name, instances in want.items():
        doc = json.loads((run["out"] / "labelme" / Path(file_name).with_suffix(".json")).read_text())
        h, w = doc["imageHeight"], doc["imageWidth"]
        groups = labelme_instances(doc)
        assert [g[0]["label"] for g in groups] == [n for n, _ in instances]
        ious += [
            (_iou(m, labelme_mask(g, h, w)), int(m.sum()))
            for (_, m), g in zip(instances, groups, strict=True)
        ]
    _check_ious(ious)


@pytest.mark.parametrize("case", ["nuts", "val"])
def test_yolo_lines_draw_the_source_masks_in_ultralytics(case, request):
    run = request.getfixturevalue(case)
    src = _coco(run["src"])
    want = _source_masks(src)
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in src.dataset["images"]}
    ious = []
    for file_name, instances in want.items():
        lines = (
            (run["out"] / "yolo" / "labels" / Path(file_name).with_suffix(".txt")).read_text().splitlines()
        )
        assert len(lines) == len(instances)
        ious += [
            (_iou(m, yolo_mask(line, *sizes[file_name])), int(m.sum()))
            for (_, m), line in zip(instances, lines, strict=True)
        ]
    _check_ious(ious)


@pytest.mark.parametrize("case", ["nuts", "val"])
@pytest.mark.parametrize("via", ["labelme", "yolo"])
def test_round_trip_back_to_coco(case, via, request):
    run = request.getfixturevalue(case)
    back = run["tmp"] / f"back-{via}"
    src = run["out"] / via / ("data.yaml" if via == "yolo" else "")
    done = _run(src, "--to", "coco", "--out", back)
    assert done.exit_code == 0, done.output
    source, converted = _coco(run["src"]), _coco(back / "annotations.json")
    _check_ious(_compare_coco(source, converted))
    if via == "yolo":  # data.yaml's "# category_id N" comments carry the ids back
        names = {c["id"]: c["name"] for c in source.dataset["categories"]}
        assert {c["id"]: c["name"] for c in converted.dataset["categories"]} == names


def test_yolo_output_passes_ultralytics_dataset_check(nuts, monkeypatch, tmp_path):
    utils = pytest.importorskip("ultralytics.data.utils")
    monkeypatch.setattr(utils, "check_font", lambda *a, **k: None)  # it would download a font
    monkeypatch.chdir(tmp_path)
    data = utils.check_det_dataset(str(nuts["out"] / "yolo" / "data.yaml"), autodownload=False)
    names = sorted(c["name"] for c in _coco(NUTS).dataset["categories"])
    assert sorted(data["names"].values()) == names


def test_report_counts_crowd_regions(val):
    data = json.loads(val["src"].read_text())
    crowd = sum(1 for a in data["annotations"] if a.get("iscrowd"))
    assert crowd > 0
    report = json.loads((val["out"] / "convert_report.json").read_text())
    assert report["losses"]["labelme"]["crowd region left out"] == crowd
    assert report["losses"]["yolo"]["crowd region left out"] == crowd
    assert report["written"]["coco"] == len(data["annotations"])
    back = _coco(val["out"] / "annotations.json")
    assert sum(1 for a in back.dataset["annotations"] if a["iscrowd"]) == crowd


def test_report_counts_small_holes(tmp_path):
    """A: a 1-px hole only (every polygon format fills it). B: a 1-px and a 25-px hole (COCO keeps both as
    RLE, labelme as a mask shape; YOLO cuts both)."""
    from pycocotools import mask as mask_util

    a = np.zeros((40, 40), np.uint8)
    a[2:15, 2:15] = 1
    a[6, 6] = 0
    b = np.zeros((40, 40), np.uint8)
    b[18:38, 18:38] = 1
    b[20, 20] = 0
    b[25:30, 25:30] = 0
    anns = []
    for k, m in enumerate((a, b), start=1):
        counts = mask_util.encode(np.asfortranarray(m))["counts"].decode()
        anns.append(
            {
                "id": k,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": {"size": [40, 40], "counts": counts},
            }
        )
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": anns,
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    done = _run(tmp_path / "a.json", "--to", "coco,labelme,yolo", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    losses = json.loads((tmp_path / "out" / "convert_report.json").read_text())["losses"]
    reason = "holes under 4 px filled by the polygon"
    assert (losses["coco"][reason], losses["labelme"][reason]) == (1, 1)
    assert reason not in losses.get("yolo", {})
    back = _coco(tmp_path / "out" / "annotations.json")
    got_a, got_b = (back.annToMask(ann).astype(bool) for ann in back.dataset["annotations"])
    assert got_a[6, 6] and not got_b[20, 20] and not got_b[27, 27]
    line = (tmp_path / "out" / "yolo" / "labels" / "a.txt").read_text().splitlines()[1]
    yolo_a = yolo_mask((tmp_path / "out" / "yolo" / "labels" / "a.txt").read_text().splitlines()[0], 40, 40)
    yolo_b = yolo_mask(line, 40, 40)
    assert not yolo_a[6, 6] and not yolo_b[20, 20] and not yolo_b[27, 27]


BAD = {
    "unknown category": ({"category_id": 99}, "annotation id 7: category id 99 is not in 'categories'"),
    "empty segmentation": ({"segmentation": []}, "annotation id 7: segmentation is empty"),
    "missing image": ({"image_id": 42}, "annotation id 7: image id 42 is not in 'images'"),
}


def _good() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}
        ],
    }


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_annotation_names_file_and_annotation_and_leaves_no_output(case, tmp_path):
    change, message = BAD[case]
    data = _good()
    data["annotations"][0].update(change)
    (tmp_path / "ann.json").write_text(json.dumps(data))
    done = _run(tmp_path / "ann.json", "--to", "coco,labelme,yolo", "--out", tmp_path / "out")
    assert done.exit_code == 1
    assert f"ann.json: {message}" in done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.json"]


def test_box_only_file_is_refused_saying_what_writes_boxes(tmp_path):
    data = _good()
    data["annotations"][0]["bbox"] = [2, 2, 10, 10]
    del data["annotations"][0]["segmentation"]  # as a box-only model's annotations.json
    (tmp_path / "ann.json").write_text(json.dumps(data))
    done = _run(tmp_path / "ann.json", "--to", "labelme,yolo", "--out", tmp_path / "out")
    assert done.exit_code == 1
    assert "ann.json: annotation id 7 has no segmentation, only a bbox" in done.output
    assert "mrseg predict --format labelme,yolo" in done.output and "Traceback" not in done.output


def test_missing_and_invalid_files(tmp_path):
    done = _run(tmp_path / "nope.json", "--to", "coco", "--out", tmp_path / "out")
    assert done.exit_code == 1 and "nope.json: file not found" in done.output
    (tmp_path / "bad.json").write_text("{not json")
    done = _run(tmp_path / "bad.json", "--to", "coco", "--out", tmp_path / "out")
    assert done.exit_code == 1 and "bad.json: not valid JSON" in done.output
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_good_file_converts(tmp_path):
    (tmp_path / "ann.json").write_text(json.dumps(_good()))
    done = _run(tmp_path / "ann.json", "--to", "coco,yolo", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    losses = json.loads((tmp_path / "out" / "convert_report.json").read_text())["losses"]
    assert losses == {"yolo": {"image file not found: label written without its image": 1}}
    back = _coco(tmp_path / "out" / "annotations.json")
    assert back.annToMask(back.dataset["annotations"][0]).sum() > 0
    assert "score" not in back.dataset["annotations"][0]


def test_labelme_read_exactly_as_labelme_draws_it(val):
    """labelme -> COCO RLE is exact: every annotation is labelme's own rasterisation of its shapes."""
    back = val["tmp"] / "labelme-rle"
    done = _run(val["out"] / "labelme", "--to", "coco", "--mask-format", "rle", "--out", back)
    assert done.exit_code == 0, done.output
    gt = _coco(back / "annotations.json")
    for image in gt.dataset["images"]:
        doc = json.loads((val["out"] / "labelme" / Path(image["file_name"]).with_suffix(".json")).read_text())
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image["id"]]))
        groups = labelme_instances(doc, AREA_KINDS)
        assert len(anns) == len(groups)
        for ann, shapes in zip(anns, groups, strict=True):
            want = labelme_mask(shapes, doc["imageHeight"], doc["imageWidth"])
            assert np.array_equal(gt.annToMask(ann).astype(bool), want)


def test_yolo_read_exactly_as_ultralytics_draws_it(nuts):
    back = nuts["tmp"] / "yolo-rle"
    done = _run(nuts["out"] / "yolo", "--to", "coco", "--mask-format", "rle", "--out", back)
    assert done.exit_code == 0, done.output
    gt = _coco(back / "annotations.json")
    for image in gt.dataset["images"]:
        lines = (nuts["out"] / "yolo" / "labels" / Path(image["file_name"]).with_suffix(".txt")).read_text()
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(lines.splitlines())
        for ann, line in zip(anns, lines.splitlines(), strict=True):
            want = yolo_mask(line, image["height"], image["width"])
            assert np.array_equal(gt.annToMask(ann).astype(bool), want)
            assert gt.cats[ann["category_id"]]["name"] == yaml_names(nuts)[int(line.split()[0])]


def yaml_names(run) -> dict:
    import yaml

    return yaml.safe_load((run["out"] / "yolo" / "data.yaml").read_text())["names"]


def test_labelme_shapes_of_every_kind(tmp_path):
    """Rectangle, circle and grouped polygons as labelme draws them; a point shape is counted, not converted;
    a score in the description survives into COCO."""
    shapes = [
        {"label": "box", "points": [[2, 3], [10, 12]], "shape_type": "rectangle", "group_id": None},
        {"label": "disc", "points": [[20, 20], [25, 22]], "shape_type": "circle", "group_id": None},
        {"label": "two", "points": [[30, 2], [38, 2], [38, 9]], "shape_type": "polygon", "group_id": 4},
        {"label": "two", "points": [[30, 30], [38, 30], [34, 38]], "shape_type": "polygon", "group_id": 4},
        {"label": "pin", "points": [[5, 30]], "shape_type": "point", "group_id": None},
    ]
    for s in shapes:
        s.update(flags={}, description="", mask=None)
    shapes[0]["description"] = "score 0.875"
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": "x.png", "imageData": None,
           "imageHeight": 40, "imageWidth": 40}  # fmt: skip
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "x.json").write_text(json.dumps(doc))
    done = _run(tmp_path / "lm", "--to", "coco", "--mask-format", "rle", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    gt = _coco(tmp_path / "out" / "annotations.json")
    anns = gt.dataset["annotations"]
    groups = labelme_instances(doc, AREA_KINDS)
    assert [gt.cats[a["category_id"]]["name"] for a in anns] == ["box", "disc", "two"]
    for ann, group in zip(anns, groups, strict=True):
        assert np.array_equal(gt.annToMask(ann).astype(bool), labelme_mask(group, 40, 40))
    assert anns[0]["score"] == 0.875 and "score" not in anns[1]
    losses = json.loads((tmp_path / "out" / "convert_report.json").read_text())["losses"]
    assert losses["source"] == {"labelme point shape (no area) left out": 1}


def test_out_folder_not_empty_is_refused(tmp_path):
    (tmp_path / "ann.json").write_text(json.dumps(_good()))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    done = _run(tmp_path / "ann.json", "--to", "coco", "--out", tmp_path / "out")
    assert done.exit_code == 1 and "already exists and is not empty" in done.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
