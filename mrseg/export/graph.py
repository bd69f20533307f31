"""The part of Mask R-CNN that goes into an exported file: backbone, RPN and RoI heads on a fixed canvas."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrseg.model.maskrcnn import MaskRCNN


class InferenceGraph(nn.Module):
    """forward(images [N, 3, H, W] normalized and zero-padded, image_sizes float [N, 2] (h, w) of the resized
    images) -> (boxes [D, 4] xyxy resized-image pixels, scores [D], labels int64 [D], mask_probs [D, 1, M, M],
    image_index int64 [D]), detections of all N images concatenated (see `mrseg.export.spec.GraphSpec`).

    Shares the model's modules (and weights). Written for tracing: N is fixed by the example input; (H, W) and
    the number of detections stay dynamic (shapes are traced tensors: anchors, per-level top-k and the
    per-image splits follow them), and the image sizes stay inputs (they clip boxes).
    """

    def __init__(self, *, model: MaskRCNN):
        super().__init__()
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        padded_size = (images.shape[-2], images.shape[-1])  # traced: the graph takes any padded size
        sizes = [(image_sizes[i, 0], image_sizes[i, 1]) for i in range(images.shape[0])]
        features = self.backbone(images)
        proposals, _ = self.rpn(features, sizes, padded_size)
        detections = self.roi_heads._forward_test(features, proposals, sizes)
        labels = torch.cat([d["labels"] for d in detections])
        mask_probs = torch.cat([d["mask_probs"] for d in detections])
        image_index = torch.cat([torch.full_like(d["labels"], i) for i, d in enumerate(detections)])
        boxes = [d["boxes"] for d in detections]
        scores = [d["scores"] for d in detections]
        return torch.cat(boxes), torch.cat(scores), labels, mask_probs, image_index
