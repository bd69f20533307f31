"""The part of Mask R-CNN that goes into an exported file: backbone, RPN and RoI heads on a fixed canvas."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrseg.model.maskrcnn import MaskRCNN
from mrseg.model.postprocess import box_detections


class InferenceGraph(nn.Module):
    """forward(images [N, 3, H, W] normalized and zero-padded, image_sizes float [N, 2] (h, w) of the resized
    images) -> (boxes [D, 4] xyxy resized-image pixels, scores [D], labels int64 [D], mask_probs [D, 1, M, M],
    image_index int64 [D]), detections of all N images concatenated (see `mrseg.export.spec.GraphSpec`).

    Shares the model's modules (and weights). Written for tracing: N and (H, W) are fixed by the example
    input, the number of detections stays dynamic, and the image sizes stay inputs (they only clip boxes). The
    RoI-head step mirrors `RoIHeads._forward_test` but splits per image by tensor sizes, which tracing keeps
    dynamic (a split by Python ints would be frozen into the graph).
    """

    def __init__(self, *, model: MaskRCNN):
        super().__init__()
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        padded_size = (int(images.shape[-2]), int(images.shape[-1]))
        sizes = [(image_sizes[i, 0], image_sizes[i, 1]) for i in range(images.shape[0])]
        features = self.backbone(images)
        proposals, _ = self.rpn(features, sizes, padded_size)
        heads = self.roi_heads
        class_logits, box_deltas = heads.box_predictor(heads.box_head(heads.box_pooler(features, proposals)))
        detections = box_detections(
            class_logits,
            box_deltas,
            proposals,
            sizes,
            box_coder=heads.box_coder,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
        )
        boxes = [d[0] for d in detections]
        labels = torch.cat([d[2] for d in detections])
        mask_logits = heads.mask_head(heads.mask_pooler(features, boxes))
        rows = torch.arange(labels.shape[0], device=labels.device)
        mask_probs = mask_logits.sigmoid()[rows, labels][:, None]
        image_index = torch.cat([torch.full_like(d[2], i) for i, d in enumerate(detections)])
        return torch.cat(boxes), torch.cat([d[1] for d in detections]), labels, mask_probs, image_index
