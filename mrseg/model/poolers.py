"""Multi-level RoIAlign: each RoI is pooled from the FPN level that matches its size (FPN paper, eq. 1).

Level assignment: k = floor(k0 + log2(sqrt(w * h) / 224) + eps), clamped to [min_level, max_level], with
k0 = 4. `eps` = 1e-6 reproduces torchvision's LevelMapper, so a box of exactly 224 px lands on P4 regardless
of float rounding.

The `aligned` choice. Mask R-CNN's RoIAlign samples at continuous coordinates (detectron2's ROIAlignV2,
`aligned=True`: shift the box by -0.5 px so pixel centres line up). torchvision's MultiScaleRoIAlign uses
`aligned=False` (the legacy, half-pixel-shifted variant), and its COCO weights were trained that way. The
flag is therefore a constructor argument: the torchvision-compatible archs (`r50-fpn`, `r50-fpn-v2`) default
to `aligned=False`, so torchvision's weights give torchvision's detections; archs trained only by mrseg
default to `aligned=True`. Both use sampling_ratio 2 (2x2 bilinear samples per bin).

Scales are the fixed strides of the levels (1/4 ... 1/32), which is what torchvision infers from the feature
shapes for any image of normal size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """`mrseg_kernels.roi_align`, imported on first use so that the model code imports without the compiled
    extension. features [N, C, H, W]; rois [K, 5] (image index, x1, y1, x2, y2) -> [K, C, *output_size]."""
    import mrseg_kernels

    return mrseg_kernels.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


def assign_fpn_levels(
    boxes: Tensor,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """boxes [K, 4] xyxy (image pixels) -> int64 [K] level index in 0..(max_level - min_level)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    scale = torch.sqrt(area)
    level = torch.floor(
        canonical_level + torch.log2(scale / canonical_size) + torch.tensor(eps, dtype=scale.dtype)
    )
    level = torch.clamp(level, min=min_level, max=max_level)
    return level.to(torch.int64) - min_level


class MultiScaleRoIAlign(nn.Module):
    """Pools a fixed-size feature for each RoI from its FPN level through `mrseg_kernels.roi_align`.

    forward(features [P2.. [N, C, H/s, W/s]], boxes list per image [K_i, 4]) -> [sum K_i, C, S, S].
    `strides`: the stride of each pooled level (default P2..P5 = 4, 8, 16, 32).
    """

    def __init__(
        self,
        *,
        output_size: int,
        sampling_ratio: int = 2,
        aligned: bool = False,
        strides: tuple[int, ...] = (4, 8, 16, 32),
    ):
        super().__init__()
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.strides = tuple(strides)
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        features = features[: len(self.strides)]
        ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
        rois = torch.cat([torch.cat(ids, dim=0), torch.cat(boxes, dim=0)], dim=1)  # [sum K_i, 5]
        levels = assign_fpn_levels(torch.cat(boxes, dim=0), self.min_level, self.max_level)
        pooled, order = [], []
        size = (self.output_size, self.output_size)
        for level, (feature, stride) in enumerate(zip(features, self.strides, strict=True)):
            idx = torch.where(levels == level)[0]
            pooled.append(roi_align(feature, rois[idx], size, 1 / stride, self.sampling_ratio, self.aligned))
            order.append(idx)
        # level-sorted rows back to RoI order in one gather (tensor ops only, so tracing for export keeps
        # the merge in the graph); rows of the concatenation are RoIs `cat(order)`, argsort inverts that
        merged = torch.cat([p.to(features[0].dtype) for p in pooled], dim=0)
        return merged.index_select(0, torch.argsort(torch.cat(order)))
