"""Mask R-CNN (He et al. 2017): transform -> backbone (ResNet-FPN) -> RPN -> RoI heads -> outputs at
original size."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrseg.model.backbone import ResNetFPN
from mrseg.model.postprocess import paste_masks, scale_boxes
from mrseg.model.roi_heads import RoIHeads
from mrseg.model.rpn import RPN
from mrseg.model.transform import ImageTransform


class MaskRCNN(nn.Module):
    """forward(images, targets=None), like torchvision's detection models.

    images: list of float [3, H_i, W_i] RGB in 0..1, sizes may differ.
    Training (targets given: "boxes" float [G, 4] xyxy pixels, "labels" int64 [G] in 1..K, "masks" uint8
    [G, H, W]): returns {loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg, loss_mask}.
    Eval: returns per image {"boxes" float32 [D, 4] xyxy original pixels, "scores" [D], "labels" int64 [D],
    "masks" bool [D, 1, H, W] thresholded at `mask_threshold`}. With `paste_masks=False` (for export, or for a
    caller that pastes chunk-wise with `mrseg.model.postprocess.paste_masks`), "masks" is replaced by
    "mask_probs" float [D, 1, 28, 28], the predicted class's mask in the frame of its box.
    """

    def __init__(
        self,
        *,
        transform: ImageTransform,
        backbone: ResNetFPN,
        rpn: RPN,
        roi_heads: RoIHeads,
        mask_threshold: float = 0.5,
        paste_masks: bool = True,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.mask_threshold = mask_threshold
        self.paste_masks = paste_masks

    @property
    def num_classes(self) -> int:
        return self.roi_heads.box_predictor.cls_score.out_features - 1

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError(
                    "MaskRCNN: targets are required in training mode (call model.eval() to predict)"
                )
            check_targets(targets, len(images))
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, image_sizes, targets = self.transform(images, targets if self.training else None)
        features = self.backbone(batch)
        proposals, rpn_losses = self.rpn(features, image_sizes, tuple(batch.shape[-2:]), targets)
        detections, head_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return [
            self.postprocess(d, s, o) for d, s, o in zip(detections, image_sizes, original_sizes, strict=True)
        ]

    def postprocess(
        self, detection: dict[str, Tensor], size: tuple[int, int], original_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        boxes = scale_boxes(detection["boxes"], size, original_size)
        out = {"boxes": boxes, "scores": detection["scores"], "labels": detection["labels"]}
        if self.paste_masks:
            masks = paste_masks(detection["mask_probs"], boxes, original_size, threshold=self.mask_threshold)
            out["masks"] = masks[:, None]
        else:
            out["mask_probs"] = detection["mask_probs"]
        return out


def check_targets(targets: list[dict[str, Tensor]], num_images: int) -> None:
    """Raises a ValueError naming the image and the problem when a training target is malformed."""
    if len(targets) != num_images:
        raise ValueError(f"MaskRCNN: got {num_images} images but {len(targets)} targets")
    for i, t in enumerate(targets):
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"MaskRCNN: target {i} has no '{key}' (needs boxes, labels, masks)")
        boxes = t["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(
                f"MaskRCNN: target {i} boxes must be float [N, 4], got {boxes.dtype} {tuple(boxes.shape)}"
            )
        if t["labels"].dtype != torch.int64:
            raise ValueError(f"MaskRCNN: target {i} labels must be int64, got {t['labels'].dtype}")
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bad.any():
            j = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"MaskRCNN: target {i} box {j} {boxes[j].tolist()} has no area (x2 <= x1 or y2 <= y1); "
                "drop or fix degenerate boxes in the dataset"
            )
