"""The second stage: box head + predictor, and the optional mask and keypoint heads on pooled RoI features,
their losses and inference."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrseg.model.box_coder import BoxCoder
from mrseg.model.keypoint_head import KeypointHead, heatmaps_to_keypoints, keypoint_loss
from mrseg.model.layers import NormFactory, conv_stack, init_kaiming
from mrseg.model.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher, box_iou_batched, pad_boxes
from mrseg.model.poolers import MultiScaleRoIAlign, roi_align
from mrseg.model.postprocess import box_detections
from mrseg.model.sampler import BalancedSampler


class BoxHead(nn.Module):
    """Optional 3x3 convs (v2: four, with BN) then fully connected layers with ReLU.

    x [R, C, S, S] -> [R, fc_dims[-1]]. The FPN default is two FC layers of 1024 (no convs).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooled_size: int,
        conv_dims: tuple[int, ...] = (),
        fc_dims: tuple[int, ...] = (1024, 1024),
        norm: NormFactory | None = None,
    ):
        super().__init__()
        self.convs, in_channels = conv_stack(in_channels, conv_dims, norm)
        dims = (in_channels * pooled_size * pooled_size, *fc_dims)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.out_features = dims[-1]
        init_kaiming(self.convs)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        x = x.flatten(start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class BoxPredictor(nn.Module):
    """x [R, D] -> (class logits [R, K+1] for a softmax over K classes + background, deltas [R, 4(K+1)])."""

    def __init__(self, *, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, (num_classes + 1) * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """Four 3x3 convs (256, ReLU, optional norm), a 2x deconv + ReLU, and a 1x1 conv to one mask per class.

    x [R, C, 14, 14] -> mask logits [R, K+1, 28, 28] (channel 0, background, is never used).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        conv_dims: tuple[int, ...] = (256, 256, 256, 256),
        norm: NormFactory | None = None,
    ):
        super().__init__()
        self.convs, in_channels = conv_stack(in_channels, conv_dims, norm)
        self.deconv = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(in_channels, num_classes + 1, kernel_size=1)
        init_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.predictor(F.relu(self.deconv(x)))


def fast_rcnn_losses(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor
) -> dict[str, Tensor]:
    """Softmax cross-entropy over the sampled RoIs, and smooth-L1 (beta 1/9) on the ground-truth class's
    deltas of the positives, summed and divided by the number of sampled RoIs. labels [R];
    regression_targets [R, 4]."""
    loss_classifier = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)
    loss_box_reg = F.smooth_l1_loss(
        deltas[pos, labels[pos]], regression_targets[pos], beta=1 / 9, reduction="sum"
    ) / max(labels.numel(), 1)
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def mask_targets(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
    """Crops each RoI's matched ground-truth mask and resamples it to size x size (RoIAlign, aligned=False, as
    torchvision). gt_masks [G, H, W] uint8; boxes [R, 4]; matched_idxs [R] -> [R, size, size] float 0..1."""
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), spatial_scale=1.0)[:, 0]


def mask_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """Mean per-pixel sigmoid BCE on the ground-truth class's mask only. mask_logits [R, K+1, M, M]."""
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits, targets)


class RoIHeads(nn.Module):
    """Box branch, and optional mask and keypoint branches (Mask R-CNN: box + mask; Keypoint R-CNN: box +
    keypoint, masks optional; Faster R-CNN: box only).

    Training: adds the ground-truth boxes to the proposals, matches them (IoU >= fg_iou positive), samples
    `batch_size_per_image` RoIs at `positive_fraction`, and returns loss_classifier, loss_box_reg, and
    loss_mask / loss_keypoint for the branches present (on the positive RoIs).
    Inference: per-class boxes -> score threshold, class-aware NMS, top `detections_per_img`; then the mask
    and keypoint heads on the kept boxes. Returns per image {"boxes" [D, 4], "scores" [D], "labels" [D]},
    plus "mask_probs" [D, 1, 28, 28] with a mask head and "keypoints" float32 [D, K, 3] (x, y, 1),
    "keypoints_scores" [D, K] with a keypoint head, all in the coordinates of the resized image.
    """

    def __init__(
        self,
        *,
        box_pooler: MultiScaleRoIAlign,
        box_head: BoxHead,
        box_predictor: BoxPredictor,
        mask_pooler: MultiScaleRoIAlign | None = None,
        mask_head: MaskHead | None = None,
        keypoint_pooler: MultiScaleRoIAlign | None = None,
        keypoint_head: KeypointHead | None = None,
        matcher: Matcher,
        sampler: BalancedSampler,
        box_coder: BoxCoder,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ):
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        pairs = ((mask_pooler, mask_head), (keypoint_pooler, keypoint_head))
        if any((pooler is None) != (head is None) for pooler, head in pairs):
            raise ValueError("RoIHeads: give a branch's pooler and head together (or neither)")
        self.keypoint_pooler = keypoint_pooler
        self.keypoint_head = keypoint_head
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def forward(
        self,
        features: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            return [], self._forward_train(features, proposals, targets)
        return self._forward_test(features, proposals, image_sizes), {}

    def sample_proposals(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """-> per image: sampled boxes [S, 4], labels [S] (0 = background), matched gt index [S], regression
        targets [S, 4]. Each image's candidates are its proposals plus its ground-truth boxes; all images are
        matched and sampled in one pass (candidates and ground truths padded to the largest count; padding
        is never sampled)."""
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        candidates, is_candidate = pad_boxes(
            [torch.cat([p, g]) for p, g in zip(proposals, gt_boxes, strict=True)]
        )
        gt, is_gt = pad_boxes(gt_boxes)
        shape = candidates.shape[:2]
        if gt.shape[1] == 0:
            matched = torch.zeros(shape, dtype=torch.int64, device=candidates.device)
            labels = torch.zeros_like(matched)
            gt = candidates.new_zeros((shape[0], 1, 4))
        else:
            matches = self.matcher(box_iou_batched(gt, candidates).masked_fill(~is_gt[:, :, None], -1.0))
            matched = matches.clamp(min=0)
            gt_labels = torch.nn.utils.rnn.pad_sequence([t["labels"] for t in targets], batch_first=True)
            labels = torch.gather(gt_labels.to(torch.int64), 1, matched)
            labels[matches == BELOW_LOW_THRESHOLD] = 0
            labels[matches == BETWEEN_THRESHOLDS] = -1
        labels[~is_candidate] = -1
        pos, neg = self.sampler(labels)
        keep = pos | neg
        image_idx, idx = torch.where(keep)
        boxes, labels, matched = candidates[image_idx, idx], labels[image_idx, idx], matched[image_idx, idx]
        regression_targets = self.box_coder.encode(gt[image_idx, matched], boxes)
        counts = keep.sum(dim=1).tolist()
        return tuple(list(t.split(counts)) for t in (boxes, labels, matched, regression_targets))

    def _forward_train(
        self, features: list[Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        boxes, labels, matched, regression_targets = self.sample_proposals(proposals, targets)
        box_features = self.box_head(self.box_pooler(features, boxes))
        class_logits, box_deltas = self.box_predictor(box_features)
        losses = fast_rcnn_losses(class_logits, box_deltas, torch.cat(labels), torch.cat(regression_targets))

        if self.mask_head is None and self.keypoint_head is None:
            return losses
        pos = [torch.where(lab > 0)[0] for lab in labels]
        pos_boxes = [b[p] for b, p in zip(boxes, pos, strict=True)]
        pos_labels = [lab[p] for lab, p in zip(labels, pos, strict=True)]
        pos_matched = [m[p] for m, p in zip(matched, pos, strict=True)]
        if self.mask_head is not None:
            size = 2 * self.mask_pooler.output_size
            mask_tgts = [
                mask_targets(t["masks"], b, m, size)
                for b, m, t in zip(pos_boxes, pos_matched, targets, strict=True)
            ]
            mask_logits = self.mask_head(self.mask_pooler(features, pos_boxes))
            losses["loss_mask"] = mask_loss(mask_logits, torch.cat(mask_tgts), torch.cat(pos_labels))
        if self.keypoint_head is not None:
            heatmaps = self.keypoint_head(self.keypoint_pooler(features, pos_boxes))
            gt_keypoints = [t["keypoints"][m] for m, t in zip(pos_matched, targets, strict=True)]
            losses["loss_keypoint"] = keypoint_loss(heatmaps, torch.cat(gt_keypoints), torch.cat(pos_boxes))
        return losses

    def _forward_test(
        self,
        features: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        decode_keypoints: bool = True,
    ) -> list[dict[str, Tensor]]:
        """decode_keypoints=False (export: decoding resizes each RoI to its own size, which a traced graph
        cannot) returns "keypoint_heatmaps" [D, K, 56, 56] instead of "keypoints" / "keypoints_scores"."""
        box_features = self.box_head(self.box_pooler(features, proposals))
        class_logits, box_deltas = self.box_predictor(box_features)
        detections = box_detections(
            class_logits,
            box_deltas,
            proposals,
            image_sizes,
            box_coder=self.box_coder,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
        )
        boxes = [d[0] for d in detections]
        counts = [b.shape[0] for b in boxes]  # b.shape[0], not len(b): tracing (export) keeps shapes dynamic
        results = [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in detections]
        if self.mask_head is not None:
            mask_logits = self.mask_head(self.mask_pooler(features, boxes))
            labels = torch.cat([d[2] for d in detections])
            # the predicted class's logits first, then the sigmoid: K times less work, the same values
            rows = torch.arange(labels.shape[0], device=labels.device)
            probs = mask_logits[rows, labels][:, None].sigmoid()
            for result, p in zip(results, probs.split(counts), strict=True):
                result["mask_probs"] = p
        if self.keypoint_head is not None:
            heatmaps = self.keypoint_head(self.keypoint_pooler(features, boxes))
            for result, maps in zip(results, heatmaps.split(counts), strict=True):
                if not decode_keypoints:
                    result["keypoint_heatmaps"] = maps
                    continue
                result["keypoints"], result["keypoints_scores"] = heatmaps_to_keypoints(maps, result["boxes"])
        return results
