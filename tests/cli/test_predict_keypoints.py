"""`mrseg predict` with a Keypoint R-CNN and a Faster R-CNN, every format read back by its consumer's own
library and compared with torchvision's `keypointrcnn_resnet50_fpn` / `fasterrcnn_resnet50_fpn` (seeded
random weights, converted into mrseg checkpoints) on a real photo:

- annotations.json / results.json through pycocotools (`COCO`, `loadRes`) with `--no-fuse`: boxes, scores
  and keypoints equal to torchvision's rounded as the files round them (0.01 px, 1e-5), with the same
  visibility; box-only files have no segmentation. With the default options (the fused copy): boxes within
  float rounding of torchvision's, scores within 1e-4, keypoints within 0.5 px;
- `mrseg eval --iou-type keypoints` of results.json against a ground truth made of torchvision's own
  detections: OKS AP 1.0;
- predictions.jsonl: keypoint scores within 1e-3;
- labelme: `point` shapes named by COCO's keypoint names, grouped with their person's `rectangle`, rasterised
  by labelme's `shape_to_mask`;
- YOLO: ultralytics' `check_det_dataset` (kpt_shape, flip_idx) and `YOLODataset` (pose / detect) read the
  labels back to torchvision's keypoints and boxes;
- video frames keep track ids (annotations.json `track_id`, labelme `group_id`), overlays are drawn.

The R50 models run at a short side of 160 px with a high --score, so the keypoint head sees a few people.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from pycocotools.coco import COCO

from mrseg.cli import main
from mrseg.model.checkpoint_format import make_checkpoint
from mrseg.model.coco_classes import (
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_SKELETON,
    coco_label_classes,
    coco_person_classes,
)
from tests.model.conftest import build_ours_from, build_torchvision_detector
from tests.outputs import consumers

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "nuts" / "images" / "0.jpg"  # 800x600
SIZES = {"min_size": 160, "max_size": 240}
KP_SCORE = 0.9  # 7 people of the seeded keypoint model on the photo: the keypoint head runs on those only
BOX_SCORE = 0.95  # 16 boxes of the seeded Faster R-CNN
FORMATS = "coco,coco-results,jsonl,labelme,yolo,overlay"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)


def _oracle(model: torch.nn.Module, rgb: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        (out,) = model([torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255])
    return {k: v.numpy() for k, v in out.items()}


def _predict(out: Path, sources: list[Path], weights: Path, score: float, *options: str) -> Path:
    args = ["predict", *map(str, sources), "--weights", str(weights), "--score", str(score)]
    args += ["--out", str(out), "--workers", "0", "-q", *options]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _write_video(path: Path, rgb: np.ndarray, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (rgb.shape[1], rgb.shape[0]))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for _ in range(frames):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _one_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


@pytest.fixture(scope="module")
def kp_run(photo, tmp_path_factory) -> dict:
    """torchvision's Keypoint R-CNN (oracle) and `mrseg predict` of the same weights on the photo (a lossless
    PNG, so both see the same pixels) and a 2-frame video of it."""
    threads = _one_thread_module()
    try:
        root = tmp_path_factory.mktemp("kp")
        tv_model = build_torchvision_detector("keypoint", seed=0, box_score_thresh=KP_SCORE, **SIZES)
        with torch.no_grad():  # sharper heatmaps: a clear argmax per keypoint, as trained weights give
            tv_model.roi_heads.keypoint_predictor.kps_score_lowres.weight.mul_(10.0)
        ours = build_ours_from(tv_model, "r50-fpn-kp", **SIZES)
        weights = root / "kp.pt"
        torch.save(make_checkpoint(ours, arch="r50-fpn-kp", classes=coco_person_classes(), **SIZES), weights)
        images = root / "images"
        images.mkdir()
        cv2.imwrite(str(images / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        video = _write_video(root / "clip.mp4", cv2.resize(photo, (400, 300)), frames=2)
        oracle = _oracle(tv_model, photo)
        out = _predict(root / "out", [images, video], weights, KP_SCORE, "--format", FORMATS, "--no-fuse")
    finally:
        torch.set_num_threads(threads)
    assert len(oracle["scores"]) >= 3, "the comparison needs people"
    return dict(root=root, out=out, oracle=oracle, image=photo, weights=weights, score=KP_SCORE)


@pytest.fixture(scope="module")
def box_run(photo, tmp_path_factory) -> dict:
    """torchvision's Faster R-CNN (oracle) and `mrseg predict` of the same weights on the photo, with every
    mask step of mrseg made to fail: a box-only model must not reach any."""
    threads = _one_thread_module()
    try:
        root = tmp_path_factory.mktemp("box")
        tv_model = build_torchvision_detector(
            "faster", seed=1, num_classes=91, box_score_thresh=BOX_SCORE, **SIZES
        )
        ours = build_ours_from(tv_model, "r50-fpn-box", **SIZES)
        weights = root / "box.pt"
        torch.save(make_checkpoint(ours, arch="r50-fpn-box", classes=coco_label_classes(), **SIZES), weights)
        images = root / "images"
        images.mkdir()
        cv2.imwrite(str(images / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        oracle = _oracle(tv_model, photo)

        def no_masks(*args, **kwargs):
            raise AssertionError("a mask step ran for a box-only model")

        with pytest.MonkeyPatch.context() as mp:
            for target in (
                "mrseg.engine.predict.model_output.cropped_masks",
                "mrseg.outputs.records.rle_encode",
                "mrseg.outputs.records.mask_to_segmentation",
                "mrseg.outputs.yolo.yolo_lines",
                "mrseg.outputs.labelme.mask_to_polygons",
            ):
                mp.setattr(target, no_masks)
            out = _predict(root / "out", [images], weights, BOX_SCORE, "--format", FORMATS, "--no-fuse")
    finally:
        torch.set_num_threads(threads)
    assert len(oracle["scores"]) >= 5
    return dict(root=root, out=out, oracle=oracle, image=photo, weights=weights, score=BOX_SCORE)


# The model issue's 1e-2 px: with --no-fuse the model's boxes are torchvision's to the bit, and a file's x, y,
# w, h rounded to 0.01 px give back x + w within 1e-2 (plus float error).
BOX_TOLERANCE = 1e-2 + 1e-6


def fused_box_tolerance(boxes: np.ndarray) -> np.ndarray:
    """Per box [N, 1], for the default fused copy (BatchNorms folded into channels_last convs): 1e-2 px plus
    1e-4 of the box's size for the copy's float rounding, which these random weights amplify (0.011 px from
    the model on this photo, up to 0.07 px over other seeds, benchmarks/fold_rounding.py; on a trained model
    2.3e-5 px, benchmarks/fuse_exactness.py), plus the file's 1e-2."""
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    return 1e-2 + 1e-4 * size + BOX_TOLERANCE


def _rounded_xywh(boxes: np.ndarray) -> np.ndarray:
    """torchvision's boxes [N, 4] (x0, y0, x1, y1) as the files write them: x, y, w, h rounded to 0.01."""
    return np.array([[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
                     for x0, y0, x1, y1 in boxes.astype(np.float64).tolist()]).reshape(-1, 4)  # fmt: skip


def _photo_id(coco: COCO) -> int:
    (image_id,) = [im["id"] for im in coco.dataset["images"] if im["file_name"] == "photo.png"]
    return image_id


def _xyxy(bbox) -> np.ndarray:
    x, y, w, h = bbox
    return np.array([x, y, x + w, y + h])


def _match(oracle_boxes: np.ndarray, found_boxes: np.ndarray) -> np.ndarray:
    """For each oracle box, the index of the found box nearest to it (every one used once)."""
    assert len(found_boxes) == len(oracle_boxes), f"{len(found_boxes)} found, torchvision {len(oracle_boxes)}"
    distance = np.abs(oracle_boxes[:, None, :] - found_boxes[None, :, :]).max(-1)
    order = distance.argmin(1)
    assert len(set(order.tolist())) == len(order), "two torchvision boxes matched one found box"
    return order


def test_coco_files_hold_torchvision_keypoints(kp_run):
    out, oracle = kp_run["out"], kp_run["oracle"]
    coco = COCO(str(out / "annotations.json"))
    (category,) = coco.loadCats(coco.getCatIds())
    assert category["name"] == "person"
    assert category["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES)
    assert category["skeleton"] == [list(p) for p in COCO_PERSON_SKELETON]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[_photo_id(coco)]))
    found = np.array([_xyxy(a["bbox"]) for a in anns])
    order = _match(oracle["boxes"], found)
    anns = [anns[k] for k in order]
    box_diff = np.abs(found[order] - oracle["boxes"]).max()
    score_diff = max(abs(a["score"] - s) for a, s in zip(anns, oracle["scores"], strict=True))
    points = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
    keypoint_diff = np.abs(points[..., :2] - oracle["keypoints"][..., :2]).max()
    print(f"annotations.json vs torchvision: box {box_diff:.2e} px, score {score_diff:.2e}, keypoints "
          f"{keypoint_diff:.2e} px over {len(anns)} people")  # fmt: skip
    assert box_diff <= BOX_TOLERANCE and score_diff <= 1e-4 and keypoint_diff <= 0.5
    # --no-fuse: exactly torchvision's numbers, as rounded in the file
    assert [a["bbox"] for a in anns] == _rounded_xywh(oracle["boxes"]).tolist()
    assert [a["score"] for a in anns] == [round(float(v), 5) for v in oracle["scores"]]
    assert (points[..., :2] == np.round(oracle["keypoints"][..., :2].astype(np.float64), 2)).all()
    # visibility: torchvision marks every predicted keypoint 1; COCO's "labelled and visible" is 2
    assert ((points[..., 2] == 2) == (oracle["keypoints"][..., 2] > 0)).all()
    assert all(a["num_keypoints"] == 17 and "segmentation" not in a for a in anns)
    assert all(a["category_id"] == 1 for a in anns)

    results = coco.loadRes(str(out / "results.json"))  # pycocotools' own reader of detections
    dets = results.loadAnns(results.getAnnIds(imgIds=[_photo_id(coco)]))
    assert sorted(d["score"] for d in dets) == sorted(a["score"] for a in anns)
    by_score = {d["score"]: d for d in dets}
    for ann in anns:
        det = by_score[ann["score"]]  # the box score, which the OKS evaluation ranks by
        assert det["keypoints"] == ann["keypoints"]
        np.testing.assert_allclose(det["bbox"], ann["bbox"], atol=1e-9)


def test_keypoint_eval_of_results_against_torchvision_is_perfect(kp_run, tmp_path):
    """A ground truth of torchvision's detections (its keypoints, v = 2), and `mrseg eval --iou-type
    keypoints` of the run's results.json (the photo's) against it: every OKS figure 1.0."""
    out, oracle = kp_run["out"], kp_run["oracle"]
    coco = COCO(str(out / "annotations.json"))
    image_id = _photo_id(coco)
    anns = []
    for k, (box, points) in enumerate(zip(oracle["boxes"], oracle["keypoints"], strict=True)):
        x0, y0, x1, y1 = (float(v) for v in box)
        flat = np.column_stack([points[:, :2], np.full(len(points), 2.0)]).reshape(-1).tolist()
        anns.append({
            "id": k + 1, "image_id": image_id, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "keypoints": flat, "num_keypoints": len(points),
        })  # fmt: skip
    gt = {"images": coco.loadImgs([image_id]), "annotations": anns, "categories": coco.dataset["categories"]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [r for r in json.loads((out / "results.json").read_text()) if r["image_id"] == image_id]
    (tmp_path / "res.json").write_text(json.dumps(results))
    args = ["eval", "--coco", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json")]
    args += ["--iou-type", "keypoints", "--json", str(tmp_path / "metrics.json")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())["keypoints"]
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == metrics["AR"] == 1.0, metrics


def test_jsonl_has_torchvision_keypoint_scores(kp_run):
    out, oracle = kp_run["out"], kp_run["oracle"]
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    (record,) = [r for r in lines if r["image"]["file_name"] == "photo.png"]
    instances = record["instances"]
    order = _match(oracle["boxes"], np.array([_xyxy(i["bbox"]) for i in instances]))
    scores = np.array([instances[k]["keypoint_scores"] for k in order])
    diff = np.abs(scores - oracle["keypoints_scores"])
    print(f"predictions.jsonl keypoint scores vs torchvision: {diff.max():.2e} (scores up to "
          f"{np.abs(oracle['keypoints_scores']).max():.0f})")  # fmt: skip
    assert scores.shape == (len(order), 17)
    assert diff.max() <= 1e-3
    assert (scores == np.round(oracle["keypoints_scores"].astype(np.float64), 5)).all()  # --no-fuse: exact
    assert [instances[k]["bbox"] for k in order] == _rounded_xywh(oracle["boxes"]).tolist()
    assert [instances[k]["score"] for k in order] == [round(float(v), 5) for v in oracle["scores"]]


def _labelme_doc(out: Path, name: str) -> dict:
    doc = json.loads((out / "labelme" / f"{name}.json").read_text())
    for shape in doc["shapes"]:  # labelme's loader's type rules (labelme/_label_file.py)
        assert isinstance(shape["label"], str) and shape["points"]
        assert shape["group_id"] is None or type(shape["group_id"]) is int
    return doc


def test_labelme_points_are_grouped_with_their_person(kp_run):
    out, oracle = kp_run["out"], kp_run["oracle"]
    doc = _labelme_doc(out, "photo")
    shape_module = consumers.labelme_shape_module()
    h, w = doc["imageHeight"], doc["imageWidth"]
    groups: dict[int, list[dict]] = {}
    for shape in doc["shapes"]:
        groups.setdefault(shape["group_id"], []).append(shape)
    assert None not in groups and len(groups) == len(oracle["scores"])
    people = [[s for s in g if s["shape_type"] == "rectangle"] for g in groups.values()]
    assert all(len(p) == 1 and p[0]["label"] == "person" for p in people)
    boxes = np.array([np.reshape(p[0]["points"], -1) for p in people])
    order = _match(oracle["boxes"], boxes)
    groups_in_order = [list(groups.values())[k] for k in order]
    diff = 0.0
    for group, tv_points in zip(groups_in_order, oracle["keypoints"], strict=True):
        points = [s for s in group if s["shape_type"] == "point"]
        assert [s["label"] for s in points] == list(COCO_PERSON_KEYPOINT_NAMES)
        xy = np.array([s["points"][0] for s in points])
        diff = max(diff, float(np.abs(xy - tv_points[:, :2]).max()))
        for s in points:  # labelme draws a point as a small disk around it
            mask = shape_module.shape_to_mask((h, w), s["points"], "point")
            x, y = (int(v) for v in s["points"][0])
            assert mask[min(y, h - 1), min(x, w - 1)]
    print(f"labelme keypoints vs torchvision: {diff:.2e} px")
    assert diff <= 0.5


def _ultralytics_dataset(yolo: Path, task: str, monkeypatch):
    from ultralytics.data import utils
    from ultralytics.data.dataset import YOLODataset

    monkeypatch.setattr(utils, "check_font", lambda *a, **k: None)  # it would download a font
    monkeypatch.chdir(yolo.parent.parent)  # not the dataset's folder: data.yaml resolves its own paths
    data = utils.check_det_dataset(str(yolo / "data.yaml"), autodownload=False)
    dataset = YOLODataset(img_path=data["val"], data=data, task=task, augment=False, imgsz=160)
    return data, {Path(lab["im_file"]).stem: lab for lab in dataset.labels}


def test_yolo_pose_labels_through_ultralytics(kp_run, monkeypatch):
    out, oracle = kp_run["out"], kp_run["oracle"]
    h, w = kp_run["image"].shape[:2]
    data, labels = _ultralytics_dataset(out / "yolo", "pose", monkeypatch)
    assert data["kpt_shape"] == [17, 3] and data["names"] == {0: "person"}
    mirrored = {"left": "right", "right": "left"}  # a mirrored image swaps left and right; the nose stays
    for name, k in zip(COCO_PERSON_KEYPOINT_NAMES, data["flip_idx"], strict=True):
        side, _, part = name.partition("_")
        assert COCO_PERSON_KEYPOINT_NAMES[k] == (f"{mirrored[side]}_{part}" if side in mirrored else name)
    label = labels["photo"]
    assert (label["cls"] == 0).all()
    cx, cy, bw, bh = (label["bboxes"] * (w, h, w, h)).T
    boxes = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    order = _match(oracle["boxes"], boxes)
    keypoints = label["keypoints"][order]  # [N, 17, 3], normalised x, y and visibility
    # YOLO holds points inside the image: torchvision puts the keypoints of a box thinner than a pixel
    # (of the resized image) at the bottom edge up to that pixel beyond it (1.7 px here); they are clipped
    inside = np.clip(oracle["keypoints"][..., :2], 0, (w, h))
    kp_diff = np.abs(keypoints[..., :2] * (w, h) - inside).max()
    box_diff = np.abs(boxes[order] - oracle["boxes"])
    print(f"YOLO-pose via ultralytics vs torchvision: keypoints {kp_diff:.2e}, boxes {box_diff.max():.2e} px")
    assert kp_diff <= 0.5 and box_diff.max() <= BOX_TOLERANCE
    assert ((keypoints[..., 2] > 0) == (oracle["keypoints"][..., 2] > 0)).all()


def test_video_frames_keep_track_ids_in_every_file(kp_run):
    out = kp_run["out"]
    coco = COCO(str(out / "annotations.json"))
    frames = sorted((im for im in coco.dataset["images"] if "video" in im), key=lambda im: im["frame"])
    assert [im["frame"] for im in frames] == [0, 1]
    tracks = [[a["track_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))] for im in frames]
    assert all(len(set(t)) == len(t) > 0 for t in tracks)
    # the same picture twice (re-encoded, so not to the pixel): people keep their tracks
    assert len(set(tracks[0]) & set(tracks[1])) >= len(tracks[1]) // 2
    stem = Path(frames[1]["file_name"]).with_suffix("").as_posix()
    doc = _labelme_doc(out, stem)
    assert {s["group_id"] for s in doc["shapes"]} == set(tracks[1])
    assert sum(s["shape_type"] == "point" for s in doc["shapes"]) == 17 * len(tracks[1])
    assert (out / "overlay" / "clip.mp4").stat().st_size > 0
    overlay = cv2.imread(str(out / "overlay" / "photo.jpg"))
    assert overlay is not None and overlay.shape[:2] == kp_run["image"].shape[:2]


def test_box_only_model_writes_boxes_in_every_format(box_run, monkeypatch):
    out, oracle = box_run["out"], box_run["oracle"]
    h, w = box_run["image"].shape[:2]
    coco = COCO(str(out / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[_photo_id(coco)]))
    found = np.array([_xyxy(a["bbox"]) for a in anns])
    order = _match(oracle["boxes"], found)
    box_diff = np.abs(found[order] - oracle["boxes"])
    score_diff = np.abs(np.array([anns[k]["score"] for k in order]) - oracle["scores"]).max()
    print(f"box-only annotations.json vs torchvision: box {box_diff.max():.2e} px, score {score_diff:.2e}")
    assert box_diff.max() <= BOX_TOLERANCE and score_diff <= 1e-4
    assert [anns[k]["bbox"] for k in order] == _rounded_xywh(oracle["boxes"]).tolist()  # --no-fuse: exact
    assert [anns[k]["category_id"] for k in order] == oracle["labels"].tolist()
    for ann in anns:
        assert "segmentation" not in ann and "keypoints" not in ann
        w_box, h_box = ann["bbox"][2:]  # area is the box's (w and h rounded to 0.01 in the file)
        assert abs(ann["area"] - w_box * h_box) <= 0.005 * (w_box + h_box) + 0.01
    results = json.loads((out / "results.json").read_text())
    assert results and all("segmentation" not in r for r in results)
    assert len(coco.loadRes(results).dataset["annotations"]) == len(anns)  # pycocotools reads them

    doc = _labelme_doc(out, "photo")
    assert {s["shape_type"] for s in doc["shapes"]} == {"rectangle"}
    shape_module = consumers.labelme_shape_module()
    for shape, ann in zip(doc["shapes"], anns, strict=True):
        np.testing.assert_allclose(np.reshape(shape["points"], -1), _xyxy(ann["bbox"]), atol=1e-9)
        assert all(v == round(v, 2) for v in np.reshape(shape["points"], -1).tolist())  # 0.01 px, no 0.789999
        assert shape_module.shape_to_mask((h, w), shape["points"], "rectangle").any()

    lines = (out / "yolo" / "labels" / "photo.txt").read_text().splitlines()
    assert lines and all(len(line.split()) == 5 for line in lines)  # YOLO detection: class cx cy w h
    _, labels = _ultralytics_dataset(out / "yolo", "detect", monkeypatch)
    cx, cy, bw, bh = (labels["photo"]["bboxes"] * (w, h, w, h)).T
    boxes = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    order = _match(oracle["boxes"], boxes)
    names = yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"]
    assert "kpt_shape" not in yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    label_names = [names[int(c)] for c in labels["photo"]["cls"].ravel()[order]]
    assert label_names == [coco_label_classes()[int(lab) - 1]["name"] for lab in oracle["labels"]]
    assert np.abs(boxes[order] - oracle["boxes"]).max() <= BOX_TOLERANCE


@pytest.mark.parametrize("run_name", ["kp_run", "box_run"])
def test_default_options_stay_within_float_rounding_of_torchvision(run_name, request):
    """`mrseg predict` as a user runs it (no --no-fuse: the fused copy): the same detections as torchvision's
    with the same labels, boxes within the fused copy's float rounding, scores within 1e-4, keypoints within
    0.5 px."""
    run = request.getfixturevalue(run_name)
    oracle = run["oracle"]
    threads = _one_thread_module()
    try:
        images, weights = [run["root"] / "images"], run["weights"]
        out = _predict(run["root"] / "default", images, weights, run["score"], "--format", "coco,jsonl")
    finally:
        torch.set_num_threads(threads)
    assert json.loads((out / ".mrseg" / "run.json").read_text())["fused"] is True
    assert json.loads((run["out"] / ".mrseg" / "run.json").read_text())["fused"] is False
    coco = COCO(str(out / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    found = np.array([_xyxy(a["bbox"]) for a in anns])
    order = _match(oracle["boxes"], found)
    anns = [anns[k] for k in order]
    box_diff = np.abs(found[order] - oracle["boxes"])
    score_diff = max(abs(a["score"] - s) for a, s in zip(anns, oracle["scores"], strict=True))
    print(f"{run_name} default options vs torchvision: box {box_diff.max():.2e} px, score {score_diff:.2e}")
    assert (box_diff <= fused_box_tolerance(oracle["boxes"])).all() and score_diff <= 1e-4
    labels = [a["category_id"] for a in anns]
    assert labels == (oracle["labels"].tolist() if run_name == "box_run" else [1] * len(anns))
    if run_name == "kp_run":
        points = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        assert np.abs(points[..., :2] - oracle["keypoints"][..., :2]).max() <= 0.5
        lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        instances = lines[0]["instances"]
        order = _match(oracle["boxes"], np.array([_xyxy(i["bbox"]) for i in instances]))
        scores = np.array([instances[k]["keypoint_scores"] for k in order])
        # 1e-3, plus the fused copy's fp32 rounding on these logits of up to ~900
        assert (np.abs(scores - oracle["keypoints_scores"]) <= 1e-3 + 1e-5 * np.abs(scores)).all()


@pytest.mark.parametrize(
    "kind, arch, seed",
    [("faster", "r50-fpn-box", 2), ("faster-v2", "r50-fpn-v2-box", 0), ("keypoint", "r50-fpn-kp", 1)],
)
def test_no_fuse_files_equal_torchvision_on_every_aspect_ratio(kind, arch, seed, photo, tmp_path):
    """Other seeds and models (v2 included) on crops of the photo that are tall, wide and tiny: with --no-fuse
    annotations.json holds torchvision's boxes and scores exactly, as the file rounds them (the default fused
    copy fails this on each of the three)."""
    crops = {"tall": photo[:, 300:420], "wide": photo[250:330], "tiny": photo[100:140, 200:260]}
    score = 0.9 if kind == "keypoint" else BOX_SCORE
    threads = _one_thread_module()
    try:
        tv_model = build_torchvision_detector(kind, seed=seed, box_score_thresh=score, **SIZES)
        ours = build_ours_from(tv_model, arch, **SIZES)
        classes = coco_person_classes() if kind == "keypoint" else coco_label_classes()
        weights = tmp_path / "model.pt"
        torch.save(make_checkpoint(ours, arch=arch, classes=classes, **SIZES), weights)
        images = tmp_path / "images"
        images.mkdir()
        oracles = {}
        for name, crop in crops.items():
            cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            oracles[name] = _oracle(tv_model, crop)
        out = _predict(tmp_path / "out", [images], weights, score, "--no-fuse", "--format", "coco")
    finally:
        torch.set_num_threads(threads)
    coco = COCO(str(out / "annotations.json"))
    detections = 0
    for image in coco.dataset["images"]:
        oracle = oracles[Path(image["file_name"]).stem]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(oracle["boxes"])
        if not anns:
            continue
        order = _match(oracle["boxes"], np.array([_xyxy(a["bbox"]) for a in anns]))
        anns = [anns[k] for k in order]
        assert [a["bbox"] for a in anns] == _rounded_xywh(oracle["boxes"]).tolist()
        assert [a["score"] for a in anns] == [round(float(v), 5) for v in oracle["scores"]]
        assert [a["category_id"] for a in anns] == oracle["labels"].tolist()
        detections += len(anns)
    assert detections >= 5, "the comparison needs detections"


def test_keypoint_annotations_import_into_datumaro_as_cvat_does(kp_run):
    """datumaro's `coco_person_keypoints` importer (CVAT's "COCO Keypoints 1.0") takes annotations.json: per
    person a box and 17 points at torchvision's keypoints (--no-fuse: to the file's 0.01 px), all visible."""
    out, oracle = kp_run["out"], kp_run["oracle"]
    got = consumers.datumaro_import(out / "annotations.json", "coco_person_keypoints")
    coco = json.loads((out / "annotations.json").read_text())
    assert got["items"] == len(coco["images"]) and got["labels"] == ["person"]
    assert got["bboxes"] == len(coco["annotations"]) == sum(len(v) for v in got["points"].values())
    boxes = np.array(got["boxes"]["photo"], np.float64)
    order = _match(oracle["boxes"], np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]))
    points = np.array(got["points"]["photo"], np.float64)[order]  # [people, 17, 3]; datumaro keeps boxes
    expected = np.round(oracle["keypoints"][..., :2].astype(np.float64), 2)  # and points in file order
    np.testing.assert_allclose(points[..., :2], expected, atol=1e-4)  # datumaro holds float32
    assert (points[..., 2] == 2).all()  # datumaro's Points.Visibility.visible


def test_box_only_annotations_import_into_datumaro_as_cvat_does(box_run):
    """datumaro's `coco_instances` importer (CVAT's "COCO 1.0") takes a box-only annotations.json (no
    `segmentation`): every detection a box at torchvision's (--no-fuse: to the file's 0.01 px)."""
    out, oracle = box_run["out"], box_run["oracle"]
    got = consumers.datumaro_import(out / "annotations.json")
    assert got["items"] == 1 and got["polygons"] == got["masks"] == 0
    boxes = np.array(got["boxes"]["photo"], np.float64)
    assert len(boxes) == len(oracle["boxes"])
    order = _match(oracle["boxes"], np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]))
    np.testing.assert_allclose(boxes[order], _rounded_xywh(oracle["boxes"]), atol=1e-4)
