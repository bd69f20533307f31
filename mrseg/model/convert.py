"""State-dict key conversion between torchvision's Mask / Keypoint / Faster R-CNN and ours, by an explicit
table of prefix rules.

Each rule pairs a torchvision prefix with our prefix; `{n}` stands for an index that is copied unchanged.
Every key of either model matches exactly one rule, so the mapping is a bijection on the key sets (tested
both ways). Older torchvision files (the 2019 COCO checkpoint) use pre-v2 names, upgraded first by
`LEGACY_RULES`. BatchNorm's `num_batches_tracked` exists only where a side uses nn.BatchNorm2d; loaders drop
it where the other side has FrozenBatchNorm2d (it carries no information at inference).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import Tensor

KEY_RULES: tuple[tuple[str, str], ...] = (
    # (torchvision, mrseg)
    ("backbone.body.conv1.", "backbone.bottom_up.stem.conv1."),
    ("backbone.body.bn1.", "backbone.bottom_up.stem.bn1."),
    ("backbone.body.layer1.", "backbone.bottom_up.res2."),
    ("backbone.body.layer2.", "backbone.bottom_up.res3."),
    ("backbone.body.layer3.", "backbone.bottom_up.res4."),
    ("backbone.body.layer4.", "backbone.bottom_up.res5."),
    ("backbone.fpn.inner_blocks.{n}.0.", "backbone.fpn.lateral_convs.{n}.conv."),
    ("backbone.fpn.inner_blocks.{n}.1.", "backbone.fpn.lateral_convs.{n}.norm."),
    ("backbone.fpn.layer_blocks.{n}.0.", "backbone.fpn.output_convs.{n}.conv."),
    ("backbone.fpn.layer_blocks.{n}.1.", "backbone.fpn.output_convs.{n}.norm."),
    ("rpn.head.conv.{n}.0.", "rpn.head.convs.{n}."),
    ("rpn.head.cls_logits.", "rpn.head.objectness_logits."),
    ("rpn.head.bbox_pred.", "rpn.head.anchor_deltas."),
    ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.cls_score."),
    ("roi_heads.box_predictor.bbox_pred.", "roi_heads.box_predictor.bbox_pred."),
    ("roi_heads.mask_head.{n}.0.", "roi_heads.mask_head.convs.{n}.conv."),
    ("roi_heads.mask_head.{n}.1.", "roi_heads.mask_head.convs.{n}.norm."),
    ("roi_heads.mask_predictor.conv5_mask.", "roi_heads.mask_head.deconv."),
    ("roi_heads.mask_predictor.mask_fcn_logits.", "roi_heads.mask_head.predictor."),
    ("roi_heads.keypoint_predictor.kps_score_lowres.", "roi_heads.keypoint_head.deconv."),
) + tuple(
    # torchvision's KeypointRCNNHeads is one Sequential of 8 (Conv2d, ReLU) pairs: conv i is entry 2i
    (f"roi_heads.keypoint_head.{2 * i}.", f"roi_heads.keypoint_head.convs.{i}.conv.")
    for i in range(8)
)

# The box head's FC layers depend on the layout: v1 has two FC layers named fc6/fc7; v2 is a Sequential of
# 4 x Conv2dNormActivation, Flatten, Linear, ReLU. A state dict with box-head convs uses the v2 table.
BOX_HEAD_V1_RULES: tuple[tuple[str, str], ...] = (
    ("roi_heads.box_head.fc6.", "roi_heads.box_head.fcs.0."),
    ("roi_heads.box_head.fc7.", "roi_heads.box_head.fcs.1."),
)
BOX_HEAD_V2_RULES: tuple[tuple[str, str], ...] = (
    ("roi_heads.box_head.{n}.0.", "roi_heads.box_head.convs.{n}.conv."),
    ("roi_heads.box_head.{n}.1.", "roi_heads.box_head.convs.{n}.norm."),
    ("roi_heads.box_head.5.", "roi_heads.box_head.fcs.0."),
)

# one-way upgrades of torchvision's pre-v2 module names (what its own _load_from_state_dict hooks do)
LEGACY_RULES: tuple[tuple[str, str | Callable[[re.Match], str]], ...] = (
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),
    (r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$", r"backbone.fpn.\1.\2.0.\3"),
    (
        r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$",
        lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}",
    ),
)


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(re.escape("{n}"), r"(\d+)"))


def _compile_rules(rules: tuple[tuple[str, str], ...]) -> list:
    return [(_compile(tv), tv, _compile(ours), ours) for tv, ours in rules]


_V1_TABLE = _compile_rules(KEY_RULES + BOX_HEAD_V1_RULES)
_V2_TABLE = _compile_rules(KEY_RULES + BOX_HEAD_V2_RULES)


def _table(keys, to_ours: bool) -> list:
    has_convs = re.compile(r"^roi_heads\.box_head\.\d+\.0\." if to_ours else r"^roi_heads\.box_head\.convs\.")
    return _V2_TABLE if any(has_convs.match(k) for k in keys) else _V1_TABLE


def _fill(template: str, groups: tuple[str, ...]) -> str:
    for g in groups:
        template = template.replace("{n}", g, 1)
    return template


def _convert_key(key: str, to_ours: bool, table: list) -> str:
    rules = ((tv_re, ours) if to_ours else (ours_re, tv) for tv_re, tv, ours_re, ours in table)
    hits = [_fill(dst, m.groups()) + key[m.end() :] for src_re, dst in rules if (m := src_re.match(key))]
    if len(hits) != 1:
        side = "torchvision" if to_ours else "mrseg"
        what = "no rule matches" if not hits else f"{len(hits)} rules match"
        raise KeyError(f"state-dict key {key!r} is not a known {side} R-CNN key ({what})")
    return hits[0]


def upgrade_legacy_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Renames pre-v2 torchvision keys (rpn.head.conv.weight, fpn inner_blocks.0.weight, mask_fcn1)."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in LEGACY_RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def torchvision_to_mrseg(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision Mask / Keypoint / Faster R-CNN state dict (current or legacy names) -> our keys."""
    state_dict = upgrade_legacy_torchvision(state_dict)
    table = _table(state_dict, True)
    return {_convert_key(k, True, table): v for k, v in state_dict.items()}


def mrseg_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict -> torchvision's keys (loadable by torchvision.models.detection.maskrcnn_resnet50_fpn*,
    keypointrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn*, following the heads the state dict has)."""
    table = _table(state_dict, False)
    return {_convert_key(k, False, table): v for k, v in state_dict.items()}


def is_torchvision_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """True when the keys look like torchvision's (backbone.body...) rather than ours."""
    return any(k.startswith("backbone.body.") for k in state_dict)


def resnet_to_mrseg(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An ImageNet classification ResNet state dict (torchvision.models.resnet*) -> our backbone keys
    (`backbone.bottom_up...`); the classifier `fc.` is dropped."""
    return {
        _convert_key("backbone.body." + k, True, _V1_TABLE): v
        for k, v in state_dict.items()
        if not k.startswith("fc.")
    }
