"""Inputs, weights and the plain torchvision writing shared by benchmarks/predict.py (model mode) and
benchmarks/predict_cli.py (CLI mode): the photos, both models with identical seeded weights, and the
straightforward conversion of torchvision's output to COCO records."""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import cv2
import numpy as np
import torch
from torch import nn

SIZES = ((640, 480), (1280, 720))
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry", "hubble_deep_field")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------- inputs


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'640x480,1280x720' -> ((640, 480), (1280, 720)) as (width, height)."""
    sizes = []
    for part in text.split(","):
        w, sep, h = part.strip().lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) < 32 or int(h) < 32:
            raise argparse.ArgumentTypeError(
                f"--sizes: {part!r} is not WIDTHxHEIGHT (e.g. 640x480,1280x720, each side >= 32)"
            )
        sizes.append((int(w), int(h)))
    return tuple(sizes)


def model_input_size(width: int, height: int, min_size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """(width, height) after the models' resize: short side `min_size`, long side at most `max_size`."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return int(width * scale), int(height * scale)


def photos(count: int, sizes=SIZES) -> list[tuple[str, np.ndarray]]:
    """`count` scikit-image photographs, each resized to every size: [(name, RGB uint8 [H, W, 3])]."""
    from skimage import data

    out = []
    for name in PHOTOS[:count]:
        rgb = np.ascontiguousarray(getattr(data, name)()[..., :3])
        for w, h in sizes:
            out.append((f"{name}_{w}x{h}", cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)))
    return out


def as_float(rgb: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in 0..1 on `device` (what a torchvision user writes)."""
    t = torch.as_tensor(rgb).to(device)
    return t.permute(2, 0, 1).float().div(255.0)


def host_tensors(images: list, device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """uint8 [H, W, 3] CPU tensors for both models, pinned when the models are on a GPU (as the CLI's loader
    hands them over)."""
    out = []
    for name, rgb in images:
        t = torch.from_numpy(rgb)
        out.append((name, t.pin_memory() if device.type == "cuda" else t))
    return out


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------- weights


@torch.no_grad()
def calibrate_norms(model: nn.Module, images: list[torch.Tensor]) -> None:
    """Sets every FrozenBatchNorm2d's statistics to those of its input on `images` (in forward order)."""
    from torchvision.ops import FrozenBatchNorm2d

    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    batch = model.transform(images)[0]
    try:
        model.backbone(getattr(batch, "tensors", batch))  # torchvision's ImageList or our tensor
    finally:
        for h in handles:
            h.remove()


def torchvision_r50_fpn() -> nn.Module:
    """torchvision's maskrcnn_resnet50_fpn as it is built for its COCO weights (FrozenBatchNorm2d, res3..res5
    trainable), 91 labels, random weights, eval mode."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=91).eval()


def torchvision_model(
    calibrate_on: list[torch.Tensor] | None, seed: int = 0, device: torch.device | str = "cpu"
) -> nn.Module:
    """torchvision_r50_fpn with seeded random weights giving ~100 detections an image, on `device` (where
    the norms are calibrated: seconds on a GPU instead of a minute on the CPU)."""
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(seed)
    model = torchvision_r50_fpn()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():  # tests/model's random statistics and affine parameters
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.shape[0]
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.05 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.05 * torch.randn(n, generator=g))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
        model.to(device)
        if calibrate_on:
            calibrate_norms(model, [x.to(device) for x in calibrate_on])
        model.roi_heads.box_predictor.cls_score.bias[[1, 3, 18]] += 6.0
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(30.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(-1.0)
    return model


def our_model(tv_state: dict | None, arch: str = "r50-fpn", calibrate_on=None, seed: int = 0) -> nn.Module:
    """Ours: `arch` with torchvision's weights through our converter, or (light archs) seeded random weights
    prepared the same way (norms calibrated, class biases raised)."""
    from mrseg.model.zoo import build_model, load_state_dict

    torch.manual_seed(seed)
    # built as Predictor(weights) builds it: mask probabilities out, pasted into box crops by the Predictor
    model = build_model(arch, 90, aligned=False if tv_state is not None else None, paste_masks=False)
    if tv_state is not None:
        load_state_dict(model, tv_state, "torchvision model")
    else:
        model.eval()
        if calibrate_on:
            calibrate_norms(model, calibrate_on)
        with torch.no_grad():
            model.roi_heads.box_predictor.cls_score.bias[[1, 3, 18]] += 6.0
            model.roi_heads.mask_head.predictor.weight.mul_(30.0)
            model.roi_heads.mask_head.predictor.bias.fill_(-1.0)
    return model.eval()


def our_predictor(model: nn.Module, classes, device: torch.device, precision: str, fuse: bool):
    """A Predictor running `model` as `mrseg predict` does (masks as box crops) at `precision`."""
    from mrseg.engine.predictor import Predictor

    return Predictor(model=model, model_classes=classes, device=device, score=0.0, fuse=fuse,
                     precision=precision, mask_crops=True)  # fmt: skip


# ------------------------------------------------------------------------------------------- writing


def torchvision_host(out: dict) -> dict[str, np.ndarray]:
    """One torchvision output on the host as a user takes it: boxes, scores, labels, masks > 0.5 [N, H, W]."""
    return {
        "boxes": out["boxes"].float().cpu().numpy(),
        "scores": out["scores"].float().cpu().numpy(),
        "labels": out["labels"].cpu().numpy(),
        "masks": (out["masks"][:, 0] > 0.5).cpu().numpy(),
    }


def torchvision_records(host: dict, image_id: int) -> list[dict]:
    """The straightforward conversion of `torchvision_host`'s arrays: binary masks -> pycocotools RLE, COCO
    annotation dicts."""
    from pycocotools import mask as mask_util

    rles = mask_util.encode(np.asfortranarray(host["masks"].transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_util.area(rles)
    records = []
    for i, (box, score, label) in enumerate(
        zip(host["boxes"].tolist(), host["scores"].tolist(), host["labels"].tolist(), strict=True)
    ):
        rle = rles[i]
        records.append(
            {
                "image_id": image_id,
                "bbox": [
                    round(box[0], 2),
                    round(box[1], 2),
                    round(box[2] - box[0], 2),
                    round(box[3] - box[1], 2),
                ],
                "score": round(score, 5),
                "category_id": int(label),
                "area": int(areas[i]),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
            }
        )
    return records


