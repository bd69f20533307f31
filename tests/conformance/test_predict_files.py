"""Every file of one default `mrseg predict` run, read back by its consumer's own library and compared with
torchvision's Mask R-CNN (same weights). See conftest.py for the run."""

from __future__ import annotations

import json

import cv2
import numpy as np
from pycocotools.coco import COCO

from mrseg.model.coco_classes import COCO_LABEL_NAMES
from tests.outputs import consumers  # the consumers' own rasterisers (labelme without Qt)

# A 1-px shift of the paste window (two boxes 1e-3 px apart round apart) is the only expected difference
# between two fp32 implementations; it costs a crisp mask a few percent of IoU.
EXACT_MIN_IOU, EXACT_MEAN_IOU = 0.9, 0.99
# issue 11's targets for polygon files, through each consumer's own rasteriser
POLY_MEAN_IOU, POLY_MIN_IOU, POLY_MIN_AREA = 0.95, 0.8, 16


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_masks(oracle, found: list[tuple[int, np.ndarray]]) -> list[tuple[object, float]]:
    """Pairs each oracle detection with the unused found (label, mask) of the same label and the best mask
    IoU: [(oracle detection, IoU)], IoU 0 where nothing is left."""
    used, pairs = set(), []
    for det in sorted(oracle, key=lambda d: -d.score):
        best, best_iou = None, 0.0
        for k, (label, mask) in enumerate(found):
            if k not in used and label == det.label:
                iou = mask_iou(mask, det.mask)
                if iou > best_iou:
                    best, best_iou = k, iou
        if best is not None:
            used.add(best)
        pairs.append((det, best_iou))
    return pairs


def polygon_pairs(oracle, found: list[tuple[int, np.ndarray]], where: str) -> list[tuple[object, float]]:
    """Every oracle detection has one instance in the file; those with a non-empty mask are paired by IoU
    (an empty mask has no polygon: a format writes a placeholder for it, which no IoU can judge)."""
    assert len(found) == len(oracle), f"{where}: {len(found)} instances, oracle {len(oracle)}"
    return match_masks([d for d in oracle if d.mask.any()], found)


def parts_of(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def polygon_report(name: str, pairs: list[tuple[object, float]]) -> None:
    ious = np.array([iou for _, iou in pairs])
    assert len(ious), f"{name}: no instances to compare"
    small_ok = [iou >= POLY_MIN_IOU for det, iou in pairs if det.mask.sum() >= POLY_MIN_AREA]
    print(
        f"{name}: {len(ious)} instances, mask IoU mean {ious.mean():.4f} min {ious.min():.4f}, "
        f"{(ious < 0.9).mean():.1%} below 0.9"
    )
    assert ious.mean() >= POLY_MEAN_IOU, f"{name}: mean IoU {ious.mean():.4f} < {POLY_MEAN_IOU}"
    assert all(small_ok), f"{name}: an instance of >= {POLY_MIN_AREA} px has IoU < {POLY_MIN_IOU}"


def test_the_run_has_instances_of_every_kind(predict_run):
    named = sum(len(d) for d in predict_run.oracle.values())
    assert named >= 10, f"the oracle found only {named} detections: the test would prove little"
    assert predict_run.unnamed > 0, "no unnamed-class detection: the N/A check would prove nothing"
    areas = [d.mask.sum() for dets in predict_run.oracle.values() for d in dets]
    assert min(areas) < 400, "no small instance"


def test_results_json_carries_the_model_masks(predict_run):
    gt = COCO(str(predict_run.out / "annotations.json"))
    res = gt.loadRes(str(predict_run.out / "results.json"))
    by_name = {img["file_name"].split("/")[-1]: img["id"] for img in gt.dataset["images"]}
    all_pairs = []
    for file, oracle in predict_run.oracle.items():
        anns = res.loadAnns(res.getAnnIds(imgIds=[by_name[file]]))
        assert len(anns) == len(oracle), f"{file}: results.json has {len(anns)}, oracle {len(oracle)}"
        found = [(a["category_id"], res.annToMask(a).astype(bool)) for a in anns]
        pairs = match_masks(oracle, found)
        for det, _ in pairs:
            x, y, w, h = min(
                (a["bbox"] for a in anns if a["category_id"] == det.label),
                key=lambda b: np.abs(np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]]) - det.box).max(),
            )
            # the model issue's 1e-2 px, 1e-4 of the box's size (fp32 differences in the regression deltas
            # grow with it: 0.025 px seen on a 449 px box) and the file's rounding of x, y, w, h to 0.01 px
            size = float(max(det.box[2] - det.box[0], det.box[3] - det.box[1]))
            tol = 1e-2 + 1e-4 * size + 1e-2
            assert np.abs(np.array([x, y, x + w, y + h]) - det.box).max() <= tol, f"{file}: box differs"
        all_pairs += pairs
    ious = np.array([iou for _, iou in all_pairs])
    print(f"results.json vs torchvision: {len(ious)} masks, IoU mean {ious.mean():.4f} min {ious.min():.4f}")
    assert ious.min() >= EXACT_MIN_IOU and ious.mean() >= EXACT_MEAN_IOU


def test_no_file_names_an_undeclared_or_unnamed_category(predict_run):
    coco = COCO(str(predict_run.out / "annotations.json"))
    declared = {c["id"] for c in coco.dataset["categories"]}
    for ann in coco.dataset["annotations"]:
        coco.loadCats(ann["category_id"])  # raises KeyError for an undeclared id
    assert all(COCO_LABEL_NAMES[c] != "N/A" for c in declared)
    results = json.loads((predict_run.out / "results.json").read_text())
    assert {r["category_id"] for r in results} <= declared
    import yaml

    names = yaml.safe_load((predict_run.out / "yolo" / "data.yaml").read_text())["names"]
    names = list(names.values()) if isinstance(names, dict) else list(names)
    assert "N/A" not in names and len(names) == len(set(names))


def test_annotations_json_polygons_through_pycocotools(predict_run):
    coco = COCO(str(predict_run.out / "annotations.json"))
    by_name = {img["file_name"].split("/")[-1]: img["id"] for img in coco.dataset["images"]}
    pairs = []
    for file, oracle in predict_run.oracle.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[file]]))
        found = [(a["category_id"], coco.annToMask(a).astype(bool)) for a in anns]
        pairs += polygon_pairs(oracle, found, f"annotations.json, {file}")
    polygon_report("annotations.json via pycocotools", pairs)


def _labelme_instances(doc: dict, shape: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per instance of a labelme file, grouped and rasterised as labelme does."""
    groups = consumers.labelme_instances(doc)
    return [(shapes[0]["label"], consumers.labelme_mask(shapes, *shape)) for shapes in groups]


def test_annotations_json_imports_into_datumaro(predict_run):
    """datumaro (CVAT's COCO importer) takes annotations.json whole: every image, every annotation, the same
    label names (an undeclared category id made it refuse the file)."""
    path = predict_run.out / "annotations.json"
    got = consumers.datumaro_import(path)
    coco = json.loads(path.read_text())
    assert got["items"] == len(coco["images"])
    assert sorted(got["labels"]) == sorted(c["name"] for c in coco["categories"])
    # a COCO annotation with several polygons becomes several datumaro polygons; an RLE one, one mask
    assert got["polygons"] + got["masks"] >= len(coco["annotations"]) > 0
    print(f"datumaro: {got['items']} images, {got['polygons']} polygons + {got['masks']} masks")


def test_labelme_files_through_labelme(predict_run):
    name_to_id = {n: i for i, n in enumerate(COCO_LABEL_NAMES) if n != "N/A"}
    pairs = []
    for file, oracle in predict_run.oracle.items():
        path = predict_run.out / "labelme" / f"{file.rsplit('.', 1)[0]}.json"
        doc = json.loads(path.read_text())
        h, w = predict_run.images[file].shape[:2]
        assert (doc["imageHeight"], doc["imageWidth"]) == (h, w)
        for s in doc["shapes"]:
            pts = np.asarray(s["points"], float)
            inside = (pts >= 0).all() and (pts[:, 0] <= w).all() and (pts[:, 1] <= h).all()
            assert inside, f"{path}: a point lies outside the {w}x{h} image"
        instances = _labelme_instances(doc, (h, w))
        pairs += polygon_pairs(oracle, [(name_to_id[label], m) for label, m in instances], str(path))
    polygon_report("labelme via labelme.utils.shape_to_mask", pairs)


def test_yolo_labels_through_ultralytics(predict_run):
    import yaml

    names = yaml.safe_load((predict_run.out / "yolo" / "data.yaml").read_text())["names"]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    name_to_id = {n: i for i, n in enumerate(COCO_LABEL_NAMES) if n != "N/A"}
    pairs = []
    for file, oracle in predict_run.oracle.items():
        h, w = predict_run.images[file].shape[:2]
        label_file = predict_run.out / "yolo" / "labels" / f"{file.rsplit('.', 1)[0]}.txt"
        lines = label_file.read_text().split("\n")
        found = []
        for line in filter(None, lines):
            cls, *coords = line.split()
            xy = np.asarray(coords, float).reshape(-1, 2)
            assert ((xy >= 0) & (xy <= 1)).all(), f"{file}: normalised point outside 0..1"
            found.append((name_to_id[names[int(cls)]], consumers.yolo_mask(line, h, w)))
        pairs += polygon_pairs(oracle, found, f"yolo, {file}")
    # YOLO-seg holds one polygon per instance: a mask of several parts is one ring whose bridges are drawn as
    # lines of pixels, so a mask of parts scattered far apart cannot reach the targets in any one ring (for
    # most of those below 0.8 here, even a Steiner tree of bridges could not: README, Predict). The targets
    # hold for one-part masks (with their holes); for several parts the ring is never worse than writing
    # the largest part alone, and their mean is guarded against getting worse.
    single = [(d, iou) for d, iou in pairs if parts_of(d.mask) == 1]
    several = [(d, iou) for d, iou in pairs if parts_of(d.mask) > 1]
    polygon_report("yolo via ultralytics polygon2mask, one-part masks", single)
    if several:
        ious = np.array([iou for _, iou in several])
        print(
            f"yolo, masks of several parts: {len(ious)} instances, IoU mean {ious.mean():.4f} "
            f"min {ious.min():.4f}, {(ious < 0.9).mean():.1%} below 0.9"
        )
        assert ious.mean() >= 0.76
        for det, iou in several:
            sizes = cv2.connectedComponentsWithStats(det.mask.astype(np.uint8), connectivity=8)[2][1:, 4]
            assert iou >= sizes.max() / sizes.sum() - 0.01, (iou, sizes.tolist())


def test_eval_is_pycocotools(predict_run, cli, tmp_path):
    """`mrseg eval` of the run's results.json against its annotations.json: all 12 statistics per IoU type
    equal pycocotools' COCOeval on the same two files."""
    from pycocotools.cocoeval import COCOeval

    gt_path, res_path, out = predict_run.out / "annotations.json", predict_run.out / "results.json", tmp_path
    result = cli("eval", "--coco", str(gt_path), "--pred", str(res_path), "--json", str(out / "eval.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    ours = json.loads((out / "eval.json").read_text())
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    gt = COCO(str(gt_path))
    for iou_type in ("bbox", "segm"):
        evaluator = COCOeval(gt, gt.loadRes(str(res_path)), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        if iou_type == "segm":  # polygons against exact masks: a degenerate AP would prove little
            assert 0 < evaluator.stats[0] < 1, evaluator.stats[0]
        for key, value in zip(keys, evaluator.stats, strict=True):
            assert abs(ours[iou_type][key] - value) <= 1e-12, (iou_type, key, ours[iou_type][key], value)


def test_exported_onnx_through_the_cli_gives_the_same_detections(predict_run, cli, tmp_path):
    """`mrseg export` of the same weights, then `mrseg predict --weights model.onnx` (onnxruntime): the
    detections in its results.json are torchvision's, at every image size of the run."""
    onnx_path = tmp_path / "model.onnx"
    result = cli(
        "export", "--weights", str(predict_run.weights), "--arch", "r50-fpn", "--format", "onnx",
        "--out", str(onnx_path), "--no-check",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "onnx_run"
    result = cli(
        "predict", str(predict_run.images_dir), "--weights", str(onnx_path), "--format", "coco,coco-results",
        "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    gt = COCO(str(out / "annotations.json"))
    res = gt.loadRes(str(out / "results.json"))
    by_name = {img["file_name"].split("/")[-1]: img["id"] for img in gt.dataset["images"]}
    ious = []
    for file, oracle in predict_run.oracle.items():
        anns = res.loadAnns(res.getAnnIds(imgIds=[by_name[file]]))
        assert len(anns) == len(oracle), f"{file}: the ONNX run has {len(anns)}, oracle {len(oracle)}"
        found = [(a["category_id"], res.annToMask(a) > 0) for a in anns]
        ious += [iou for _, iou in match_masks(oracle, found)]
    ious = np.array(ious)
    print(f"ONNX (CLI) vs torchvision: {len(ious)} masks, IoU mean {ious.mean():.4f} min {ious.min():.4f}")
    assert ious.min() >= EXACT_MIN_IOU and ious.mean() >= EXACT_MEAN_IOU
