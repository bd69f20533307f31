"""Anchor boxes for an FPN: one size per level, several aspect ratios, tiled at the level's stride."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cell_anchors(size: float, aspect_ratios: tuple[float, ...]) -> Tensor:
    """Anchors [A, 4] xyxy centred on (0, 0) for one size; ratio = height / width; rounded to integers."""
    h_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float32))
    ws = (1 / h_ratios) * size
    hs = h_ratios * size
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors of one size (pixels) per level, e.g. (32, 64, 128, 256, 512) for P2..P6, and aspect ratios
    shared by every level. forward(image_size (H, W) of the padded batch, feature sizes [(h, w)] per level)
    -> list per level of anchors [h * w * A, 4], ordered (y, x, anchor) as the RPN head outputs them."""

    def __init__(self, sizes: tuple[float, ...], aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)):
        super().__init__()
        self.sizes = tuple(sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        for i, size in enumerate(self.sizes):
            self.register_buffer(
                f"cell_anchors_{i}", cell_anchors(size, self.aspect_ratios), persistent=False
            )

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.aspect_ratios)

    def forward(self, image_size: tuple[int, int], feature_sizes: list[tuple[int, int]]) -> list[Tensor]:
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(
                f"AnchorGenerator has {len(self.sizes)} sizes but got {len(feature_sizes)} levels"
            )
        anchors = []
        for i, (height, width) in enumerate(feature_sizes):
            base = getattr(self, f"cell_anchors_{i}")
            stride_y = image_size[0] // height
            stride_x = image_size[1] // width
            shifts_x = torch.arange(0, width, dtype=torch.int32, device=base.device) * stride_x
            shifts_y = torch.arange(0, height, dtype=torch.int32, device=base.device) * stride_y
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 4)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors
