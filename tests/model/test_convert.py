import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import (
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.mask_rcnn import MaskRCNN as TVMaskRCNN
from torchvision.models.resnet import resnet34, resnet50, resnet101
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.convert import (
    BOX_HEAD_V1_RULES,
    BOX_HEAD_V2_RULES,
    KEY_RULES,
    mrseg_to_torchvision,
    resnet_to_mrseg,
    torchvision_to_mrseg,
    upgrade_legacy_torchvision,
)
from mrseg.model.zoo import build_model

RESNETS = {"r18-fpn": resnet18, "r34-fpn": resnet34, "r50-fpn": resnet50, "r101-fpn": resnet101}


TV_BUILDERS = {
    "r50-fpn-v2": maskrcnn_resnet50_fpn_v2,
    "r50-fpn-kp": keypointrcnn_resnet50_fpn,
    "r50-fpn-box": fasterrcnn_resnet50_fpn,
    "r50-fpn-v2-box": fasterrcnn_resnet50_fpn_v2,
}


def _tv_keys(arch: str) -> dict:
    if arch in TV_BUILDERS:
        model = TV_BUILDERS[arch](weights=None, weights_backbone=None, num_classes=5)
    else:
        backbone = _resnet_fpn_extractor(RESNETS[arch](norm_layer=FrozenBatchNorm2d), 3)
        model = TVMaskRCNN(backbone, num_classes=5)
    return {k: v.shape for k, v in model.state_dict().items()}


def _drop_batch_counters(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize(
    "arch",
    [
        "r18-fpn",
        "r34-fpn",
        "r50-fpn",
        "r101-fpn",
        "r50-fpn-v2",
        "r50-fpn-kp",
        "r50-fpn-box",
        "r50-fpn-v2-box",
    ],
)
def test_conversion_is_a_bijection_on_the_key_sets(arch):
    tv = _tv_keys(arch)
    ours = {k: v.shape for k, v in build_model(arch, 4).state_dict().items()}
    if arch in ("r50-fpn-kp", "r50-fpn-box"):
        # torchvision's builders without weights put BatchNorm2d (with its counter) where ours is frozen
        tv = _drop_batch_counters(tv)
    converted = torchvision_to_mrseg(tv)
    assert len(converted) == len(tv)  # injective
    assert converted == ours  # onto our keys, with the same shapes
    assert mrseg_to_torchvision(converted) == tv  # and back


def test_every_rule_is_used_and_rules_never_overlap():
    rules = KEY_RULES + BOX_HEAD_V1_RULES + BOX_HEAD_V2_RULES
    used = set()
    for arch in ("r18-fpn", "r50-fpn-v2", "r50-fpn-kp"):
        state = _tv_keys(arch)
        torchvision_to_mrseg(state)  # raises if zero or two rules match a key
        for key in state:
            for i, (tv_prefix, _) in enumerate(rules):
                if key.startswith(tv_prefix.split("{n}")[0]):
                    used.add(i)
    assert used == set(range(len(rules)))


def test_legacy_torchvision_names_are_upgraded():
    legacy = {
        "rpn.head.conv.weight": 1,
        "rpn.head.conv.bias": 2,
        "backbone.fpn.inner_blocks.3.weight": 3,
        "backbone.fpn.layer_blocks.0.bias": 4,
        "roi_heads.mask_head.mask_fcn1.weight": 5,
        "roi_heads.mask_head.mask_fcn4.bias": 6,
        "roi_heads.box_head.fc6.weight": 7,
    }
    assert upgrade_legacy_torchvision(legacy) == {
        "rpn.head.conv.0.0.weight": 1,
        "rpn.head.conv.0.0.bias": 2,
        "backbone.fpn.inner_blocks.3.0.weight": 3,
        "backbone.fpn.layer_blocks.0.0.bias": 4,
        "roi_heads.mask_head.0.0.weight": 5,
        "roi_heads.mask_head.3.0.bias": 6,
        "roi_heads.box_head.fc6.weight": 7,
    }
    ours = torchvision_to_mrseg(legacy)
    assert ours["rpn.head.convs.0.weight"] == 1 and ours["roi_heads.mask_head.convs.3.conv.bias"] == 6


def test_unknown_key_is_named():
    with pytest.raises(KeyError, match="roi_heads.densepose_head.0.weight"):
        torchvision_to_mrseg({"roi_heads.densepose_head.0.weight": torch.zeros(1)})


def test_imagenet_resnet_keys_fill_our_backbone():
    state = resnet_to_mrseg(resnet18().state_dict())
    own = build_model("r18-fpn", 3).state_dict()
    bottom_up = {k for k in own if k.startswith("backbone.bottom_up.")}
    assert set(state) - {k for k in state if k.endswith("num_batches_tracked")} == bottom_up
