"""Oracles for the model tests: torchvision's Mask R-CNN built with seeded random weights, and ours loaded
with the same weights through the state-dict converter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.mask_rcnn import MaskRCNN as TVMaskRCNN
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.zoo import build_model, load_state_dict

TV_RESNETS = {18: resnet18, 50: resnet50}


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


def make_detections_visible(model: nn.Module) -> None:
    """Random weights give ~uniform class scores: raise a few classes above the 0.05 score threshold, and
    scale the mask logits so masks have clear insides and outsides."""
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[[1, 3, 18]] += 6.0
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(30.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(-1.0)


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
    model = build_model(arch, 90, aligned=False, **kwargs)
    load_state_dict(model, tv_model.state_dict(), "torchvision model")
    return model.eval()


@pytest.fixture
def torchvision_maskrcnn():
    return build_torchvision_maskrcnn


@pytest.fixture
def ours_from():
    return build_ours_from
