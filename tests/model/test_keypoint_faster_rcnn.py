"""Our Keypoint R-CNN and Faster R-CNN against torchvision's `keypointrcnn_resnet50_fpn` and
`fasterrcnn_resnet50_fpn` / `_v2` with the same (seeded random) weights on a real photograph: detections,
keypoints, and the state dict converted back into torchvision's model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN as TVKeypointRCNN
from torchvision.models.resnet import resnet50
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.convert import mrseg_to_torchvision

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "nuts" / "images" / "0.jpg"  # 800x600
# a small resize and few detections keep the R50 models quick on a CPU; both sides get the same settings
SIZES = {"min_size": 320, "max_size": 480, "box_detections_per_img": 20}


def _photo() -> torch.Tensor:
    array = np.asarray(Image.open(PHOTO).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def _compare(tv_model, ours, image) -> dict:
    with torch.inference_mode():
        (expected,) = tv_model([image])
        (got,) = ours([image])
    assert set(got) == set(expected)
    assert len(expected["boxes"]) >= 10  # the comparison is not vacuous
    assert torch.equal(got["labels"], expected["labels"])
    diffs = {
        "detections": len(expected["boxes"]),
        "box": float((got["boxes"] - expected["boxes"]).abs().max()),
        "score": float((got["scores"] - expected["scores"]).abs().max()),
    }
    assert diffs["box"] <= 1e-2 and diffs["score"] <= 1e-4
    if "keypoints" in expected:
        assert got["keypoints"].dtype == torch.float32
        assert got["keypoints"].shape == expected["keypoints"].shape
        assert torch.equal(got["keypoints"][..., 2], expected["keypoints"][..., 2])  # visibility
        diffs["keypoint"] = float((got["keypoints"][..., :2] - expected["keypoints"][..., :2]).abs().max())
        diffs["keypoint_score"] = float((got["keypoints_scores"] - expected["keypoints_scores"]).abs().max())
        assert diffs["keypoint"] <= 0.5 and diffs["keypoint_score"] <= 1e-3
    print(f"parity: {diffs}")
    return diffs


def test_keypoint_rcnn_matches_torchvision_on_a_photo(torchvision_detector, ours_from):
    tv_model = torchvision_detector("keypoint", seed=0, **SIZES)
    with torch.no_grad():  # sharper heatmaps: a clear argmax per keypoint, as trained weights give
        tv_model.roi_heads.keypoint_predictor.kps_score_lowres.weight.mul_(10.0)
    ours = ours_from(tv_model, "r50-fpn-kp", **SIZES)
    assert ours.heads == ("keypoint",)
    _compare(tv_model, ours, _photo())


@pytest.mark.parametrize("kind, arch", [("faster", "r50-fpn-box"), ("faster-v2", "r50-fpn-v2-box")])
def test_faster_rcnn_matches_torchvision_on_a_photo(kind, arch, torchvision_detector, ours_from):
    tv_model = torchvision_detector(kind, seed=1, num_classes=91, **SIZES)
    ours = ours_from(tv_model, arch, **SIZES)
    assert ours.heads == () and ours.roi_heads.mask_head is None
    diffs = _compare(tv_model, ours, _photo())
    assert "keypoint" not in diffs


def test_our_keypoint_model_converts_back_into_torchvision_strictly(ours_from, torchvision_detector):
    # torchvision builds its COCO Keypoint R-CNN with FrozenBatchNorm2d, as our r50-fpn-kp has
    ours = ours_from(torchvision_detector("keypoint", seed=2, **SIZES), "r50-fpn-kp", **SIZES)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    tv_model = TVKeypointRCNN(backbone, num_classes=2)
    converted = mrseg_to_torchvision(ours.state_dict())
    tv_model.load_state_dict(converted, strict=True)
    loaded = tv_model.state_dict()
    assert loaded.keys() == converted.keys()
    assert all(torch.equal(loaded[k], v) for k, v in converted.items())
