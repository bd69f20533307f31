"""Region Proposal Network: a conv head over every FPN level, proposal selection, and the RPN losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, remove_small_boxes

from mrseg.model.anchors import AnchorGenerator
from mrseg.model.box_coder import BoxCoder, clip_boxes
from mrseg.model.matcher import BETWEEN_THRESHOLDS, Matcher, box_iou_batched, pad_boxes
from mrseg.model.sampler import BalancedSampler


def _at_most(count: int | Tensor, limit: int) -> int | Tensor:
    """min(count, limit). While tracing for export `count` (a shape) is a traced tensor: the minimum stays a
    tensor so that the exported graph follows the input's size instead of the size it was traced with."""
    if isinstance(count, Tensor):
        return torch.clamp(count, max=limit)
    return min(count, limit)


def top_indices(scores: Tensor, k: int | Tensor) -> Tensor:
    """scores [N, R] -> indices [N, k] of each row's k largest, by decreasing score; equal scores by
    increasing index (and of those tied at the k-th, the lowest indices), as ONNX TopK selects and orders
    them.

    torch.topk leaves equal scores in no set order. Equal objectness logits are common (a uniform background
    or the padding gives the same features at many anchors), and which of two equal, overlapping boxes NMS
    keeps follows this order."""
    if scores.is_cuda and not torch.onnx.is_in_onnx_export():
        # one stable sort, no host sync (the per-row selection below reads sizes back to the host)
        return scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    top = scores.topk(k, dim=1)
    if torch.onnx.is_in_onnx_export() or top.indices.shape[1] == 0 or scores.shape[0] == 0:
        return top.indices
    rows = []
    for row, kth in zip(scores, top.values[:, -1], strict=True):
        candidates = torch.nonzero((row >= kth) | row.isnan()).flatten()  # increasing index; k or more
        order = row[candidates].sort(descending=True, stable=True).indices
        rows.append(candidates[order[: top.indices.shape[1]]])
    return torch.stack(rows)


def objectness_probabilities(logits: Tensor) -> Tensor:
    """sigmoid(logits): the scores NMS orders the proposals by.

    An ONNX export computes 1 / (1 + exp(-x)) instead of using the ONNX Sigmoid op. onnxruntime's CPU Sigmoid
    is an approximation, up to 1.8e-7 off (1e-4 relative at p = 1e-3), and not monotonic: it decreased on 13%
    of steps between consecutive float32 inputs. So it reorders candidates of close logits, and NMS keeps the
    other one of two overlapping boxes. Through Exp it is monotonic and within 1.8e-7 relative of the exact
    value, as torch's sigmoid is.
    """
    if torch.onnx.is_in_onnx_export():
        return torch.reciprocal(1 + torch.exp(-logits))
    return torch.sigmoid(logits)


class RPNHead(nn.Module):
    """`num_convs` shared 3x3 convs (+ReLU), then 1x1 convs for objectness and box deltas.

    forward([F_l [N, C, H_l, W_l]]) -> (objectness [N, A, H_l, W_l] per level, deltas [N, 4A, H_l, W_l] per
    level).
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_convs: int = 1):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_convs)
        )
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in features:
            for conv in self.convs:
                x = F.relu(conv(x))
            logits.append(self.objectness_logits(x))
            deltas.append(self.anchor_deltas(x))
        return logits, deltas


def flatten_predictions(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level [N, A, H, W] / [N, 4A, H, W] -> objectness [N, R] and deltas [N, R, 4], R = sum of H*W*A,
    ordered (level, y, x, anchor) like the anchors."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas, strict=True):
        n, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(n, -1))
        flat_deltas.append(dl.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


class RPN(nn.Module):
    """Proposals from anchors: decode, keep the top-k per level, clip, drop tiny boxes, NMS per level, top-k.

    forward(features [P_l], image_sizes [(h, w)] per image, padded_size (H, W), targets)
    -> (proposals: list per image of [P_i, 4] xyxy sorted by objectness, losses dict (empty in eval)).
    """

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        matcher: Matcher,
        sampler: BalancedSampler,
        box_coder: BoxCoder,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float = 0.7,
        min_size: float = 1e-3,
        score_thresh: float = 0.0,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.score_thresh = score_thresh

    def forward(
        self,
        features: list[Tensor],
        image_sizes: list[tuple[int, int]],
        padded_size: tuple[int, int],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        logits, deltas = self.head(features)
        anchors_per_level = self.anchor_generator(padded_size, [f.shape[-2:] for f in features])
        num_per_level = [a.shape[0] for a in anchors_per_level]
        anchors = torch.cat(anchors_per_level)
        objectness, pred_deltas = flatten_predictions(logits, deltas)
        num_images = objectness.shape[0]
        proposals = self.box_coder.decode(pred_deltas.detach().reshape(-1, 4), anchors.repeat(num_images, 1))
        proposals = proposals.view(num_images, -1, 4)
        boxes = self.select_proposals(proposals, objectness.detach(), image_sizes, num_per_level)
        if not self.training:
            return boxes, {}
        if targets is None:
            raise ValueError("RPN: targets are required in training mode")
        return boxes, self.losses(anchors, objectness, pred_deltas, targets)

    def select_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_sizes: list[tuple[int, int]],
        num_per_level: list[int],
    ) -> list[Tensor]:
        """proposals [N, R, 4], objectness [N, R] -> per image [P_i, 4]."""
        mode = "train" if self.training else "test"
        top_idx, levels = [], []
        offset = 0
        for lvl, (ob, count) in enumerate(
            zip(objectness.split(num_per_level, 1), num_per_level, strict=True)
        ):
            idx = top_indices(ob, _at_most(count, self.pre_nms_top_n[mode]))
            top_idx.append(idx + offset)
            levels.append(torch.full_like(idx[0], lvl))
            offset += count
        top_idx = torch.cat(top_idx, dim=1)
        levels = torch.cat(levels)
        batch_idx = torch.arange(proposals.shape[0], device=proposals.device)[:, None]
        scores = objectness_probabilities(objectness[batch_idx, top_idx])
        proposals = proposals[batch_idx, top_idx]

        results = []
        for boxes, prob, image_size in zip(proposals, scores, image_sizes, strict=True):
            boxes = clip_boxes(boxes, image_size)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, prob, lvl = boxes[keep], prob[keep], levels[keep]
            keep = torch.where(prob >= self.score_thresh)[0]
            boxes, prob, lvl = boxes[keep], prob[keep], lvl[keep]
            keep = batched_nms(boxes, prob, lvl, self.nms_thresh)[: self.post_nms_top_n[mode]]
            results.append(boxes[keep])
        return results

    # Images matched in one pass hold [images, ground truths, anchors] IoUs and a few temporaries of twice
    # that; above this many elements (64 MB of float32) they are matched in groups of images.
    max_batched_ious = 1 << 24

    def anchor_targets(self, anchors: Tensor, targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """anchors [R, 4], targets' boxes [G_i, 4] -> (labels [N, R] float: 1 object, 0 background, -1
        ignored; the matched ground-truth box of each anchor [N, R, 4], meaningful where the label is 1).
        Images are matched together, their ground truths padded to the largest count (padding matches
        nothing), in groups small enough for `max_batched_ious`."""
        num_anchors = anchors.shape[0]
        most = max((t["boxes"].shape[0] for t in targets), default=0)
        group = max(1, self.max_batched_ious // max(1, most * num_anchors))
        labels, matched = [], []
        for start in range(0, len(targets), group):
            gt_boxes, valid = pad_boxes(
                [t["boxes"].to(anchors.dtype) for t in targets[start : start + group]]
            )
            if gt_boxes.shape[1] == 0:  # no image of the group has an object: every anchor is background
                zeros = anchors.new_zeros((gt_boxes.shape[0], num_anchors, 4))
                labels.append(zeros[..., 0])
                matched.append(zeros)
                continue
            quality = box_iou_batched(gt_boxes, anchors).masked_fill(~valid[:, :, None], -1.0)
            matches = self.matcher(quality)
            label = (matches >= 0).to(anchors.dtype)
            label[matches == BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
            image_idx = torch.arange(gt_boxes.shape[0], device=anchors.device)[:, None]
            matched.append(gt_boxes[image_idx, matches.clamp(min=0)])
        return torch.cat(labels), torch.cat(matched)

    def losses(
        self, anchors: Tensor, objectness: Tensor, pred_deltas: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """anchors [R, 4]; objectness [N, R]; pred_deltas [N, R, 4] -> loss_objectness (BCE over the sampled
        anchors), loss_rpn_box_reg (smooth-L1, beta 1/9, over positives, divided by the number sampled)."""
        labels, matched_boxes = self.anchor_targets(anchors, targets)
        pos, neg = self.sampler(labels)
        pos_idx = torch.where(pos.flatten())[0]
        sampled_idx = torch.cat([pos_idx, torch.where(neg.flatten())[0]])
        num_anchors = anchors.shape[0]
        # regression targets of the positives only (encode works row by row: the same values)
        regression_targets = self.box_coder.encode(
            matched_boxes.reshape(-1, 4)[pos_idx], anchors[pos_idx % num_anchors]
        )
        box_loss = F.smooth_l1_loss(
            pred_deltas.reshape(-1, 4)[pos_idx], regression_targets, beta=1 / 9, reduction="sum"
        ) / max(sampled_idx.numel(), 1)
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled_idx], labels.flatten()[sampled_idx]
        )
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
