"""The part of Mask R-CNN that goes into an exported file: backbone, RPN and RoI heads on a fixed canvas."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrseg.export.spec import output_names
from mrseg.model.maskrcnn import MaskRCNN


class InferenceGraph(nn.Module):
    """forward(images [N, 3, H, W] normalized and zero-padded, image_sizes float [N, 2] (h, w) of the resized
    images) -> the tensors named by `output_names(model.heads)`, detections of all N images concatenated
    (shapes: `mrseg.export.spec.GraphSpec`).

    Shares the model's modules (and weights). Written for tracing: N is fixed by the example input; (H, W) and
    the number of detections stay dynamic (shapes are traced tensors: anchors, per-level top-k and the
    per-image splits follow them), and the image sizes stay inputs (they clip boxes).
    """

    def __init__(self, *, model: MaskRCNN):
        super().__init__()
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.names = output_names(model.heads)

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, ...]:
        padded_size = (images.shape[-2], images.shape[-1])  # traced: the graph takes any padded size
        sizes = [(image_sizes[i, 0], image_sizes[i, 1]) for i in range(images.shape[0])]
        features = self.backbone(images)
        proposals, _ = self.rpn(features, sizes, padded_size)
        detections = self.roi_heads._forward_test(features, proposals, sizes, decode_keypoints=False)
        outputs = {
            name: torch.cat([d[name] for d in detections]) for name in self.names if name != "image_index"
        }
        outputs["image_index"] = torch.cat(
            [torch.full_like(d["labels"], i) for i, d in enumerate(detections)]
        )
        return tuple(outputs[name] for name in self.names)
