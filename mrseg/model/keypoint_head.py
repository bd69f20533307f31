"""The keypoint branch of Mask R-CNN (He et al. 2017, section 5): one heatmap per keypoint, its loss and its
decoding into image coordinates.

A keypoint is modelled as a one-hot mask: the head predicts K heatmaps of 56x56 over each RoI and the target
is the single 56x56 cell holding the keypoint (softmax cross-entropy over the 56 * 56 cells). Numerics follow
torchvision's Keypoint R-CNN (`keypoints_to_heatmap`, `keypointrcnn_loss`, `heatmaps_to_keypoints`), so its
COCO weights give its keypoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrseg.model.layers import NormFactory, conv_stack, init_kaiming


class KeypointHead(nn.Module):
    """Eight 3x3 convs of 512 (ReLU, optional norm), a stride-2 4x4 deconv to one map per keypoint, then a
    bilinear x2 upsample (align_corners=False).

    x [R, C, 14, 14] -> heatmap logits [R, num_keypoints, 56, 56].
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_keypoints: int = 17,
        conv_dims: tuple[int, ...] = (512,) * 8,
        norm: NormFactory | None = None,
        up_scale: int = 2,
    ):
        super().__init__()
        self.convs, in_channels = conv_stack(in_channels, conv_dims, norm)
        self.deconv = nn.ConvTranspose2d(in_channels, num_keypoints, kernel_size=4, stride=2, padding=1)
        self.up_scale = up_scale
        self.num_keypoints = num_keypoints
        init_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        x = self.deconv(x)
        return F.interpolate(
            x, scale_factor=float(self.up_scale), mode="bilinear", align_corners=False,
            recompute_scale_factor=False,
        )  # fmt: skip


def keypoint_targets(keypoints: Tensor, boxes: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The heatmap cell of each keypoint in its RoI.

    keypoints [R, K, 3] (x, y, visibility) in image pixels; boxes [R, 4] xyxy; size: the heatmap side.
    Returns (cell index y * size + x, int64 [R, K]; valid bool [R, K]): a keypoint is valid when it is
    labelled (visibility > 0) and falls inside the box. Cell x = floor((x - x1) * size / (x2 - x1)); a
    keypoint exactly on the right (bottom) edge belongs to the last cell.
    """
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    on_right, on_bottom = x == x2, y == y2
    cx = ((x - x1) * (size / (x2 - x1))).floor().long()
    cy = ((y - y1) * (size / (y2 - y1))).floor().long()
    cx[on_right] = size - 1
    cy[on_bottom] = size - 1
    valid = (cx >= 0) & (cy >= 0) & (cx < size) & (cy < size) & (keypoints[..., 2] > 0)
    return (cy * size + cx) * valid, valid


def keypoint_loss(heatmap_logits: Tensor, keypoints: Tensor, boxes: Tensor) -> Tensor:
    """Softmax cross-entropy over the S * S heatmap cells, averaged over the valid keypoints of all RoIs.

    heatmap_logits [R, K, S, S]; keypoints [R, K, 3]: each RoI's matched ground-truth keypoints; boxes [R, 4].
    With no valid keypoint the loss is zero and still part of the graph.
    """
    r, k, h, w = heatmap_logits.shape
    if h != w:
        raise ValueError(f"keypoint heatmaps must be square, got {h} x {w}")
    targets, valid = keypoint_targets(keypoints, boxes, h)
    valid = torch.where(valid.flatten())[0]
    if valid.numel() == 0:
        return heatmap_logits.sum() * 0
    return F.cross_entropy(heatmap_logits.reshape(r * k, h * w)[valid], targets.flatten()[valid])


def heatmaps_to_keypoints(heatmaps: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Decodes heatmap logits into keypoints in the boxes' coordinates.

    heatmaps [D, K, S, S]; boxes [D, 4] xyxy. Each RoI's maps are resized (bicubic, align_corners=False) to
    ceil(box width) x ceil(box height) pixels (box sides below 1 count as 1); the argmax cell (ix, iy) gives
    x = x1 + (ix + 0.5) * w / ceil(w) (the cell centre) and the same for y. Returns (keypoints float32
    [D, K, 3] as (x, y, 1), scores float32 [D, K]: the resized logit at the argmax).
    """
    num_keypoints = heatmaps.shape[1]
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    keypoints = torch.zeros((boxes.shape[0], num_keypoints, 3), dtype=torch.float32, device=heatmaps.device)
    scores = torch.zeros((boxes.shape[0], num_keypoints), dtype=torch.float32, device=heatmaps.device)
    channels = torch.arange(num_keypoints, device=heatmaps.device)
    for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist(), strict=True)):
        out_w, out_h = math.ceil(w), math.ceil(h)
        # resized one RoI at a time: every RoI has its own output size
        maps = F.interpolate(heatmaps[i][:, None], size=(out_h, out_w), mode="bicubic", align_corners=False)
        maps = maps[:, 0]
        pos = maps.reshape(num_keypoints, -1).argmax(dim=1)
        ix = pos % out_w
        iy = torch.div(pos - ix, out_w, rounding_mode="floor")
        keypoints[i, :, 0] = (ix.float() + 0.5) * (widths[i] / out_w) + boxes[i, 0]
        keypoints[i, :, 1] = (iy.float() + 0.5) * (heights[i] / out_h) + boxes[i, 1]
        keypoints[i, :, 2] = 1
        scores[i] = maps[channels, iy, ix].float()
    return keypoints, scores
