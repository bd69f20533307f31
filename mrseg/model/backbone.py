"""ResNet (18/34/50/101) bottom-up network and the FPN on top of it, producing P2..P6 with 256 channels."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.layers import ConvNorm, NormFactory, init_kaiming

RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def frozen_bn(eps: float = 1e-5) -> NormFactory:
    """A norm factory for FrozenBatchNorm2d (fixed statistics and affine; what detection fine-tuning uses)."""
    return partial(FrozenBatchNorm2d, eps=eps)


NORMS = ("frozen-bn", "bn", "gn")


def norm_factory(name: str, eps: float = 1e-5) -> NormFactory:
    """The norm layer factory for a NORMS name: frozen-bn (FrozenBatchNorm2d: pretrained fine-tuning), bn
    (BatchNorm2d: batch statistics in training, running ones in eval) or gn (GroupNorm with 32 groups:
    independent of the batch size)."""
    if name == "frozen-bn":
        return frozen_bn(eps)
    if name == "bn":
        return partial(nn.BatchNorm2d, eps=eps)
    if name == "gn":
        return lambda channels: nn.GroupNorm(32, channels, eps=eps)
    raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")


class Stem(nn.Module):
    """7x7/2 conv, norm, ReLU, 3x3/2 max-pool: [N, 3, H, W] -> [N, 64, H/4, W/4]."""

    def __init__(self, *, norm: NormFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _stage(block: type[nn.Module], in_channels: int, width: int, count: int, stride: int, norm: NormFactory):
    out_channels = width * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), norm(out_channels)
        )
    blocks = [block(in_channels, width, stride, downsample, norm_layer=norm)]
    blocks += [block(out_channels, width, norm_layer=norm) for _ in range(count - 1)]
    return nn.Sequential(*blocks), out_channels


class ResNet(nn.Module):
    """The bottom-up ResNet: stem then stages res2..res5 (strides 4, 8, 16, 32).

    forward(x [N, 3, H, W]) -> [C2, C3, C4, C5], Ci of shape [N, channels[i], H / 2^i, W / 2^i].
    `freeze_at` = k freezes the parameters of the stem (k >= 1) and of res2..res{k} (k >= 2).
    """

    def __init__(self, *, depth: int, norm: NormFactory, freeze_at: int = 2):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        block, counts = RESNET_DEPTHS[depth]
        self.stem = Stem(norm=norm)
        channels = 64
        self.out_channels: list[int] = []
        for i, (count, width) in enumerate(zip(counts, (64, 128, 256, 512), strict=True)):
            stage, channels = _stage(block, channels, width, count, 1 if i == 0 else 2, norm)
            self.add_module(f"res{i + 2}", stage)
            self.out_channels.append(channels)
        init_kaiming(self)
        for part in [self.stem, self.res2, self.res3, self.res4, self.res5][:freeze_at]:
            part.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in (self.res2, self.res3, self.res4, self.res5):
            x = stage(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al. 2017) with a max-pooled P6.

    forward([C2..C5]) -> [P2, P3, P4, P5, P6], each [N, out_channels, H / stride, W / stride] for strides
    4, 8, 16, 32, 64. Lateral 1x1 convs, nearest-neighbour top-down upsampling, 3x3 output convs;
    P6 subsamples P5 (max-pool with kernel 1, stride 2), as in Mask R-CNN's RPN.
    """

    def __init__(self, *, in_channels: list[int], out_channels: int = 256, norm: NormFactory | None = None):
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            ConvNorm(c, out_channels, kernel_size=1, norm=norm, relu=False) for c in in_channels
        )
        self.output_convs = nn.ModuleList(
            ConvNorm(out_channels, out_channels, kernel_size=3, norm=norm, relu=False) for _ in in_channels
        )
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        last = self.lateral_convs[-1](features[-1])
        results = [self.output_convs[-1](last)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[idx](features[idx])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.output_convs[idx](last))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results


class ResNetFPN(nn.Module):
    """ResNet + FPN: images [N, 3, H, W] (H, W multiples of 32) -> [P2..P6], 256 channels each."""

    def __init__(self, *, bottom_up: ResNet, fpn: FPN):
        super().__init__()
        self.bottom_up = bottom_up
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.fpn(self.bottom_up(images))


def build_resnet_fpn(
    depth: int,
    *,
    backbone_norm: NormFactory | None = None,
    fpn_norm: NormFactory | None = None,
    freeze_at: int = 2,
    out_channels: int = 256,
) -> ResNetFPN:
    """A ResNet-`depth` FPN backbone; the ResNet uses frozen BatchNorm unless `backbone_norm` says
    otherwise."""
    bottom_up = ResNet(depth=depth, norm=backbone_norm or frozen_bn(), freeze_at=freeze_at)
    fpn = FPN(in_channels=bottom_up.out_channels, out_channels=out_channels, norm=fpn_norm)
    return ResNetFPN(bottom_up=bottom_up, fpn=fpn)
