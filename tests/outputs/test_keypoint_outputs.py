"""Keypoint and box-only detections in the writers: records, YOLO pose / detection lines and data.yaml,
labelme points and rectangles, skeleton overlays. (Against the consumers' own readers and torchvision's
models: tests/cli/test_predict_keypoints.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mrseg.model.coco_classes import COCO_PERSON_KEYPOINT_NAMES, coco_person_classes
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.labelme import labelme_document
from mrseg.outputs.overlay import draw_detections, instance_color
from mrseg.outputs.records import instance_records
from mrseg.outputs.yolo import data_yaml, label_lines


def _person(keypoints: np.ndarray, box=(20.0, 10.0, 80.0, 90.0), width=100, height=100) -> Detections:
    """One person with keypoints [K, 3] (x, y, v) and keypoint scores 0, 1, 2, ..."""
    k = len(keypoints)
    return Detections(
        width=width, height=height, boxes=np.array([box], np.float32), scores=np.array([0.75], np.float32),
        labels=np.array([1]), keypoints=np.asarray(keypoints, np.float32)[None],
        keypoint_scores=np.arange(k, dtype=np.float32)[None],
    )  # fmt: skip


def test_records_mark_predicted_keypoints_visible_and_zero_the_others():
    det = _person([[30.004, 20.0, 1], [55.5, 44.25, 1], [9.0, 9.0, 0]])
    (record,) = instance_records(det, coco_person_classes())
    assert record["keypoints"] == [30.0, 20.0, 2, 55.5, 44.25, 2, 0, 0, 0]
    assert record["num_keypoints"] == 2 and record["keypoint_scores"] == [0.0, 1.0, 2.0]
    assert "segmentation" not in record and record["area"] == pytest.approx(60 * 80)


def test_yolo_pose_line_and_data_yaml():
    det = _person([[30.0, 20.0, 1], [50.0, 45.0, 1], [9.0, 9.0, 0]], width=200, height=100)
    (line,) = label_lines(det, instance_records(det, coco_person_classes()))
    values = [float(v) for v in line.split()]
    assert values[0] == 0  # class index of person
    np.testing.assert_allclose(values[1:5], [50 / 200, 50 / 100, 60 / 200, 80 / 100])
    np.testing.assert_allclose(values[5:], [30 / 200, 20 / 100, 2, 50 / 200, 45 / 100, 2, 0, 0, 0])

    data = yaml.safe_load(data_yaml(coco_person_classes()))
    assert data["kpt_shape"] == [17, 3] and data["names"] == {0: "person"}
    assert data["flip_idx"] == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # COCO's pairs
    assert data["kpt_names"] == {0: list(COCO_PERSON_KEYPOINT_NAMES)}

    two = [{"id": 1, "name": "a", "keypoints": ["x", "y"]}, {"id": 2, "name": "b", "keypoints": ["x"]}]
    with pytest.raises(ValueError, match="one number of keypoints"):
        data_yaml(two)
    assert "kpt_shape" not in yaml.safe_load(data_yaml([{"id": 1, "name": "car"}]))


def test_yolo_detection_lines_for_boxes_only():
    det = Detections(
        width=100, height=50, boxes=np.array([[10, 5, 30, 45], [-2, 0, 100, 60]], np.float32),
        scores=np.array([0.9, 0.8], np.float32), labels=np.array([2, 1]),
    )  # fmt: skip
    classes = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    lines = label_lines(det, instance_records(det, classes))
    assert lines[0] == "1 0.200000 0.500000 0.200000 0.800000"
    assert lines[1] == "0 0.500000 0.500000 1.000000 1.000000"  # clipped to the image


def test_labelme_groups_a_persons_box_and_named_points():
    det = _person([[30.0, 20.0, 1], [55.5, 44.25, 1], [9.0, 9.0, 0]])
    classes = [dict(coco_person_classes()[0], keypoints=["nose", "left_eye", "right_eye"])]
    item = InputItem(id=1, path="a.jpg", rel_path="a.jpg")
    doc = labelme_document(item, det, instance_records(det, classes), "a.jpg", classes=classes)
    shapes = doc["shapes"]
    assert [(s["shape_type"], s["label"]) for s in shapes] == [
        ("rectangle", "person"), ("point", "nose"), ("point", "left_eye"),
    ]  # fmt: skip
    assert {s["group_id"] for s in shapes} == {0}
    assert shapes[0]["points"] == [[20.0, 10.0], [80.0, 90.0]]
    assert shapes[2]["points"] == [[55.5, 44.25]] and shapes[2]["description"] == "keypoint score 1.000"
    unnamed = labelme_document(item, det, instance_records(det, classes), "a.jpg")  # no class list: numbered
    assert [s["label"] for s in unnamed["shapes"][1:]] == ["keypoint1", "keypoint2"]


def test_overlay_draws_the_skeleton_between_predicted_keypoints():
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[5] = (30, 50, 1)  # left shoulder
    keypoints[6] = (70, 50, 1)  # right shoulder: COCO's skeleton joins 6-7 (1-based)
    keypoints[11] = (50, 80, 1)  # left hip, joined to the left shoulder (6-12); the right hip: not predicted
    det = _person(keypoints, box=(10, 10, 90, 95))
    image = np.full((100, 100, 3), 128, np.uint8)
    records = instance_records(det, coco_person_classes())
    drawn = draw_detections(image, det, records, classes=coco_person_classes()).astype(int)
    color = np.array(instance_color(det, 0))

    def limb_at(rows: slice, columns: range) -> bool:  # a pixel near the colour in each column
        return all(np.abs(drawn[rows, c] - color).max(axis=-1).min() <= 60 for c in columns)

    assert limb_at(slice(48, 51), range(40, 60))  # shoulder to shoulder
    assert limb_at(slice(62, 68), range(40, 41))  # halfway from the left shoulder to the left hip
    assert (drawn[66:78, 62:68] == 128).all()  # no limb to the right hip
    plain = draw_detections(image, det, records)  # no skeleton known: the points only
    assert (plain[48:51, 40:60] == 128).all() and (plain[47:53, 27:33] != 128).any()
