"""The stick-figure keypoint generator: deterministic, COCO person-keypoints files that pycocotools scores,
and keypoints consistent with the drawn figures."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrseg.model.coco_classes import coco_person_classes

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "stickfigures_generate", ROOT / "examples" / "stickfigures" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_bytes(tmp_path):
    gen = _generator()
    a = gen.generate_split(str(tmp_path / "a"), "train", 3, 64, seed=3)
    b = gen.generate_split(str(tmp_path / "b"), "train", 3, 64, seed=3)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    for name in ("00000.png", "00001.png", "00002.png"):
        assert (tmp_path / "a" / "train" / name).read_bytes() == (
            tmp_path / "b" / "train" / name
        ).read_bytes()


def test_keypoints_lie_on_their_figures_and_pycocotools_scores_them(tmp_path):
    gen = _generator()
    path = gen.generate_split(str(tmp_path), "val", 30, 96, seed=0, max_people=3)
    data = json.loads(Path(path).read_text())
    assert data["categories"] == coco_person_classes()
    labelled, hidden, unlabelled = 0, 0, 0
    for ann in data["annotations"]:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert ann["area"] == mask.sum()
        for x, y, v in kp:
            if v == 2:  # visible: on the figure's own visible pixels
                assert mask[int(y), int(x)]
        labelled += int((kp[:, 2] == 2).sum())
        hidden += int((kp[:, 2] == 1).sum())
        unlabelled += ann["num_keypoints"] == 0
        # facing the camera: the figure's left shoulder and hip are on the image's right
        for left, right in ((5, 6), (11, 12)):
            if kp[left, 2] and kp[right, 2]:
                assert kp[left, 0] > kp[right, 0]
    assert labelled > 500 and hidden > 0 and unlabelled > 0
    assert any(not any(a["image_id"] == im["id"] for a in data["annotations"]) for im in data["images"])
    # the ground truth scored as results: pycocotools' OKS AP is 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(path)
        dets = [
            {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in data["annotations"]
            if a["num_keypoints"] > 0
        ]
        evaluation = COCOeval(gt, gt.loadRes(dets), "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == 1.0
