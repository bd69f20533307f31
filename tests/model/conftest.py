"""Oracles for the model tests: torchvision's Mask / Keypoint / Faster R-CNN built with seeded random weights,
and ours loaded with the same weights through the state-dict converter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import (
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.mask_rcnn import MaskRCNN as TVMaskRCNN
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.zoo import build_model, load_state_dict

TV_RESNETS = {18: resnet18, 50: resnet50}

# the one_thread fixture of tests/engine/conftest.py (one definition), as tests/cli/conftest.py re-exports it
_spec = importlib.util.spec_from_file_location(
    "_mrseg_engine_conftest_for_model", Path(__file__).parents[1] / "engine" / "conftest.py"
)
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)
one_thread = _engine.one_thread


def perturb_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Gives every (frozen) BatchNorm non-trivial statistics and affine parameters, so they are tested too."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.weight.shape[0]
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                m.bias.copy_(0.05 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.05 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))


def make_detections_visible(model: nn.Module, labels: tuple[int, ...] = (1, 3, 18)) -> None:
    """Random weights give ~uniform class scores: raise a few classes above the 0.05 score threshold, and
    scale the mask logits so masks have clear insides and outsides (a torchvision model with a mask head)."""
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[list(labels)] += 6.0
        if model.roi_heads.mask_predictor is not None:
            model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(30.0)
            model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(-1.0)


def freeze_batchnorm(module: nn.Module) -> None:
    """Replaces every nn.BatchNorm2d below `module` by a FrozenBatchNorm2d with the same statistics and
    affine parameters: what torchvision's v1 builders use when given weights (`norm_layer=FrozenBatchNorm2d`
    when trained), and what our v1 archs have. Without weights they build BatchNorm2d, whose eval-mode
    arithmetic rounds differently (measured: boxes 0.018 px, scores 4e-4 apart on the keypoint test photo)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


TV_BUILDERS = {
    "keypoint": keypointrcnn_resnet50_fpn,
    "faster": fasterrcnn_resnet50_fpn,
    "faster-v2": fasterrcnn_resnet50_fpn_v2,
}


def build_torchvision_detector(kind: str, seed: int = 0, **kwargs) -> nn.Module:
    """torchvision's `keypointrcnn_resnet50_fpn` (2 classes: background, person) or `fasterrcnn_resnet50_fpn`
    / `_v2` (91 classes) built without weights, seeded, with non-trivial norms and the person class (and two
    more for Faster R-CNN) above the score threshold; in eval mode. The v1 models' ResNet gets
    FrozenBatchNorm2d as torchvision's COCO models have it (see `freeze_batchnorm`)."""
    torch.manual_seed(seed)
    model = TV_BUILDERS[kind](weights=None, weights_backbone=None, **kwargs)
    perturb_norms(model, torch.Generator().manual_seed(seed + 1))
    if kind in ("keypoint", "faster"):
        freeze_batchnorm(model.backbone.body)
    make_detections_visible(model, (1,) if kind == "keypoint" else (1, 3, 18))
    return model.eval()


def build_torchvision_maskrcnn(depth: int = 50, v2: bool = False, seed: int = 0, **kwargs) -> nn.Module:
    """torchvision's Mask R-CNN (91 classes) with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    if v2:
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kwargs)
    else:
        backbone = _resnet_fpn_extractor(TV_RESNETS[depth](norm_layer=FrozenBatchNorm2d), 3)
        model = TVMaskRCNN(backbone, num_classes=91, **kwargs)
    perturb_norms(model, torch.Generator().manual_seed(seed + 1))
    make_detections_visible(model)
    return model.eval()


def build_ours_from(tv_model: nn.Module, arch: str, **kwargs) -> nn.Module:
    """Our model of `arch` with the torchvision model's weights (through the key converter), in eval mode."""
    num_classes = tv_model.roi_heads.box_predictor.cls_score.out_features - 1
    model = build_model(arch, num_classes, aligned=False, **kwargs)
    load_state_dict(model, tv_model.state_dict(), "torchvision model")
    return model.eval()


@pytest.fixture
def torchvision_maskrcnn():
    return build_torchvision_maskrcnn


@pytest.fixture
def ours_from():
    return build_ours_from


@pytest.fixture
def torchvision_detector():
    return build_torchvision_detector


# Samplers that keep every candidate make the losses deterministic; fewer proposals keep the tests quick.
# Ours takes them at construction (`ours_from(tv_model, arch, **KEEP_EVERY_SAMPLE)`); torchvision's oracle has
# no constructor argument for all of them, so `keep_every_sample` sets the same on it.
KEEP_EVERY_SAMPLE = {
    "rpn_batch_size_per_image": 10**9,
    "box_batch_size_per_image": 10**9,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 60,
}


def keep_every_sample(tv_model: nn.Module, post_nms_top_n: int = 60) -> None:
    """torchvision's model sampling as `KEEP_EVERY_SAMPLE` (with `post_nms_top_n` proposals in training)."""
    tv_model.rpn.fg_bg_sampler.batch_size_per_image = KEEP_EVERY_SAMPLE["rpn_batch_size_per_image"]
    tv_model.roi_heads.fg_bg_sampler.batch_size_per_image = KEEP_EVERY_SAMPLE["box_batch_size_per_image"]
    tv_model.rpn._pre_nms_top_n["training"] = KEEP_EVERY_SAMPLE["rpn_pre_nms_top_n_train"]
    tv_model.rpn._post_nms_top_n["training"] = post_nms_top_n


@pytest.fixture
def deterministic_sampling():
    return keep_every_sample
