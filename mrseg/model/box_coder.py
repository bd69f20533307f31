"""Box <-> regression-delta encoding (R-CNN parameterisation) and clipping to the image."""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes target boxes as deltas (dx, dy, dw, dh) relative to reference boxes, and decodes them back.

    `weights` divide the decoded deltas (Fast R-CNN uses (10, 10, 5, 5), the RPN (1, 1, 1, 1));
    `scale_clamp` bounds dw/dh before `exp` so a wild prediction cannot overflow.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = weights
        self.scale_clamp = scale_clamp

    def encode(self, targets: Tensor, references: Tensor) -> Tensor:
        """targets, references: [N, 4] xyxy -> deltas [N, 4] that turn each reference into its target."""
        wx, wy, ww, wh = self.weights
        ref_w = references[:, 2:3] - references[:, 0:1]
        ref_h = references[:, 3:4] - references[:, 1:2]
        ref_x = references[:, 0:1] + 0.5 * ref_w
        ref_y = references[:, 1:2] + 0.5 * ref_h
        tgt_w = targets[:, 2:3] - targets[:, 0:1]
        tgt_h = targets[:, 3:4] - targets[:, 1:2]
        tgt_x = targets[:, 0:1] + 0.5 * tgt_w
        tgt_y = targets[:, 1:2] + 0.5 * tgt_h
        dx = wx * (tgt_x - ref_x) / ref_w
        dy = wy * (tgt_y - ref_y) / ref_h
        dw = ww * torch.log(tgt_w / ref_w)
        dh = wh * torch.log(tgt_h / ref_h)
        return torch.cat((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """deltas [N, 4*C] (C boxes per reference, e.g. one per class), references [N, 4] -> boxes [N, C,
        4], in the wider of the two dtypes.

        Under autocast the deltas come from a bf16 / fp16 layer; decoding in that dtype would put every
        coordinate on a grid of 2 px at 256..512 px in bf16 (1 px above 1024 in fp16), so the references'
        float32 wins."""
        dtype = torch.promote_types(deltas.dtype, references.dtype)
        deltas, references = deltas.to(dtype), references.to(dtype)
        wx, wy, ww, wh = self.weights
        widths = references[:, 2] - references[:, 0]
        heights = references[:, 3] - references[:, 1]
        ctr_x = references[:, 0] + 0.5 * widths
        ctr_y = references[:, 1] + 0.5 * heights

        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        return torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
        )


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """boxes [..., 4] xyxy clipped to an image of (height, width)."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)
