"""CocoDataset(keypoints=True) on the real COCO person-keypoints sample against pycocotools' reading of it,
broken keypoint annotations, and the left/right flip."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mrseg.data.augment import hflip, keypoint_flip_map, train_transforms
from mrseg.data.coco import CocoDataset, DatasetError

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "coco-keypoints-sample" / "person_keypoints_gt.json"

# torchvision's references/detection/transforms.py (_flip_coco_person_keypoints): COCO's left/right swap
TORCHVISION_COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


@pytest.fixture
def sample(tmp_path) -> tuple[Path, Path]:
    """The real sample's json (14 people, one crowd region, two with num_keypoints 0; no segmentations) and
    a blank image of its size under its file name."""
    info = json.loads(SAMPLE.read_text())["images"][0]
    cv2.imwrite(str(tmp_path / info["file_name"]), np.zeros((info["height"], info["width"], 3), np.uint8))
    return SAMPLE, tmp_path


def test_real_sample_matches_pycocotools(sample):
    ann_file, images = sample
    ds = CocoDataset(ann_file, images, masks=False, keypoints=True)
    coco = COCO(str(ann_file))
    anns = coco.loadAnns(coco.getAnnIds(iscrowd=False))  # pycocotools' own reading, crowd left out
    assert len(ds) == 1 and ds.report.crowd == 1 and ds.report.summary("x") is None
    assert ds.keypoint_names == coco.loadCats(1)[0]["keypoints"]
    assert ds.classes[0]["skeleton"] == coco.loadCats(1)[0]["skeleton"]
    assert ds.keypoint_flip == TORCHVISION_COCO_FLIP
    image, target = ds[0]
    assert set(target) == {"boxes", "labels", "image_id", "keypoints"}  # no masks without a mask head
    keypoints = target["keypoints"].numpy()
    assert keypoints.shape == (len(anns), 17, 3) == (13, 17, 3)
    for got, ann in zip(keypoints, anns, strict=True):
        expected = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
        np.testing.assert_array_equal(got, expected)
        assert int((got[:, 2] > 0).sum()) == ann["num_keypoints"]
    assert sorted(a["num_keypoints"] for a in anns)[:2] == [0, 0]  # boxes whose keypoints are unlabelled
    x, y, w, h = np.array([a["bbox"] for a in anns], np.float32).T
    np.testing.assert_allclose(target["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1), atol=1e-4)
    assert image.shape == (3, 453, 640)


def test_masks_need_segmentations_and_keypoints_need_names(sample, tmp_path):
    ann_file, images = sample
    with pytest.raises(DatasetError, match="none of its annotations has a segmentation"):
        CocoDataset(ann_file, images)  # a mask model on a file without segmentations: nothing left
    data = json.loads(ann_file.read_text())
    del data["categories"][0]["keypoints"]
    (tmp_path / "nonames.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="no category lists 'keypoints'"):
        CocoDataset(tmp_path / "nonames.json", images, masks=False, keypoints=True)


def test_broken_keypoints_are_skipped_and_counted(sample, tmp_path):
    ann_file, images = sample
    data = json.loads(ann_file.read_text())
    anns = data["annotations"]
    anns[0]["keypoints"] = anns[0]["keypoints"][:-3]  # 16 triples
    anns[1]["keypoints"][2] = 3  # visibility 3
    anns[2]["keypoints"][0] = "x"
    anns[3]["keypoints"][0] = float("nan")
    del anns[4]["keypoints"]  # no keypoints at all: a box with unlabelled keypoints
    del anns[5]["num_keypoints"]  # trains, but pycocotools cannot score it
    (tmp_path / "broken.json").write_text(json.dumps(data, allow_nan=True))
    ds = CocoDataset(tmp_path / "broken.json", images, masks=False, keypoints=True)
    assert sum(ds.report.skipped_annotations.values()) == 4
    assert set(ds.report.skipped_annotations) == {
        "keypoints not a list of 17 (x, y, v) triples",
        "keypoint visibility not 0, 1 or 2",
        "non-numeric keypoints",
        "non-finite keypoint coordinate",
    }
    assert ds.unscorable_keypoints == 3  # 16 triples, no keypoints, no num_keypoints
    _, target = ds[0]
    assert len(target["keypoints"]) == 9 and not target["keypoints"][0].any()


def test_flip_map_from_names():
    names = [
        "nose",
        "left_eye",
        "right_eye",
        "Left Hand",
        "Right Hand",
        "LEFT_FOOT",
        "RIGHT_FOOT",
        "tail_left",
    ]
    assert keypoint_flip_map(names) == [0, 2, 1, 4, 3, 6, 5, 7]  # tail_left has no right: itself


def test_hflip_mirrors_and_swaps_keypoints(sample):
    ann_file, images = sample
    ds = CocoDataset(ann_file, images, masks=False, keypoints=True)
    image, target = ds.load(0)
    width = image.shape[1]
    _, flipped = hflip(image, target, ds.keypoint_flip)
    kp, fk = target["keypoints"], flipped["keypoints"]
    for k, other in enumerate(TORCHVISION_COCO_FLIP):
        labelled = kp[:, k, 2] > 0
        np.testing.assert_allclose(fk[labelled, other, 0], width - kp[labelled, k, 0])
        np.testing.assert_array_equal(fk[:, other, 1:], kp[:, k, 1:])
        assert not fk[~labelled, other].any()  # unlabelled keypoints stay (0, 0, 0)
    labelled = fk[..., 2] > 0
    boxes = flipped["boxes"]
    inside = (fk[..., 0] >= boxes[:, None, 0] - 1e-3) & (fk[..., 0] <= boxes[:, None, 2] + 1e-3)
    assert (
        inside[labelled].mean()
        == (
            ((kp[..., 0] >= target["boxes"][:, None, 0]) & (kp[..., 0] <= target["boxes"][:, None, 2]))[
                kp[..., 2] > 0
            ]
        ).mean()
    )  # a keypoint inside its box stays inside the mirrored box
    _, back = hflip(hflip(image, target, ds.keypoint_flip)[0], flipped, ds.keypoint_flip)
    np.testing.assert_allclose(back["keypoints"], kp, atol=1e-4)
    always = train_transforms(1.0, ds.keypoint_flip)
    np.testing.assert_array_equal(always(image, target, np.random.default_rng(0))[1]["keypoints"], fk)
