"""Data-dependent initialisation of frozen BatchNorm for training from scratch (`--weights none`).

A ResNet with FrozenBatchNorm2d at its identity initialisation (mean 0, var 1) is an un-normalised deep
network: activations grow block by block and the first SGD steps diverge. Setting each frozen BN's statistics
to the mean and variance its input has on a few training images (in forward order, so each layer sees the
already-normalised output of the previous ones) makes the random network well scaled, like a BN network at
initialisation, without changing the architecture (the checkpoint still loads into the same model).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d


@torch.no_grad()
def calibrate_frozen_bn(model: nn.Module, images: list[Tensor]) -> int:
    """Runs `model` once in eval mode on `images` (float [3, H, W] in 0..1) and sets every FrozenBatchNorm2d's
    running_mean / running_var to the statistics of its input. Returns the number of layers set."""
    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]

    def hook(module: FrozenBatchNorm2d, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        if hasattr(model, "transform") and hasattr(model, "backbone"):
            model.backbone(model.transform(images)[0])  # the frozen BNs are in the backbone; skip the heads
        else:
            model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(layers)


PREDICTOR_STD = {
    "roi_heads.box_predictor.cls_score": 0.01,
    "roi_heads.box_predictor.bbox_pred": 0.001,
    "roi_heads.mask_head.predictor": 0.001,
}


@torch.no_grad()
def init_predictors(model: nn.Module, only: list[str] | None = None) -> list[str]:
    """Re-initialises the class-specific output layers the detectron2 way (normal, std 0.01 for class scores,
    0.001 for box deltas and mask logits; zero bias), so random heads start with small outputs and losses.

    A kaiming-initialised mask predictor starts with mask logits of order 10 (loss_mask ~ 10), which a
    randomly initialised network does not survive at a normal learning rate. `only`: state-dict keys; the
    layers owning them are re-initialised (default: all three). Returns the module names re-initialised.
    """
    modules = dict(model.named_modules())
    done = []
    for name, std in PREDICTOR_STD.items():
        if name not in modules:
            continue
        if only is not None and not any(key.startswith(name + ".") for key in only):
            continue
        layer = modules[name]
        nn.init.normal_(layer.weight, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        done.append(name)
    return done
