"""Mask R-CNN (He et al. 2017): transform -> backbone (ResNet-FPN) -> RPN -> RoI heads -> outputs at
original size. With other RoI heads the same class is Keypoint R-CNN (a keypoint head, masks optional) or
Faster R-CNN (boxes only): the heads present decide the outputs and the losses."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrseg.model.backbone import ResNetFPN
from mrseg.model.postprocess import paste_masks, scale_boxes, scale_keypoints
from mrseg.model.roi_heads import RoIHeads
from mrseg.model.rpn import RPN
from mrseg.model.transform import ImageTransform


class MaskRCNN(nn.Module):
    """forward(images, targets=None), like torchvision's detection models.

    images: list of float [3, H_i, W_i] RGB in 0..1, sizes may differ.
    Training (targets given: "boxes" float [G, 4] xyxy pixels, "labels" int64 [G] in 1..K, with a mask head
    "masks" uint8 [G, H, W], with a keypoint head "keypoints" float [G, P, 3] (x, y, visibility 0/1/2;
    0 = not labelled)): returns {loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg} and
    loss_mask / loss_keypoint for the heads present.
    Eval: returns per image {"boxes" float32 [D, 4] xyxy original pixels, "scores" [D], "labels" int64 [D]}
    and, with a mask head, "masks" bool [D, 1, H, W] thresholded at `mask_threshold`; with a keypoint head,
    "keypoints" float32 [D, P, 3] (x, y, 1) in original pixels and "keypoints_scores" [D, P] (heatmap logits,
    as torchvision's). With `paste_masks=False` (for export, or for a caller that pastes chunk-wise with
    `mrseg.model.postprocess.paste_masks`), "masks" is replaced by "mask_probs" float [D, 1, 28, 28], the
    predicted class's mask in the frame of its box.
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

    @property
    def heads(self) -> tuple[str, ...]:
        """The branches beyond boxes: () (Faster R-CNN), ("mask",), ("keypoint",) or ("mask", "keypoint")."""
        return tuple(
            name
            for name, head in (("mask", self.roi_heads.mask_head), ("keypoint", self.roi_heads.keypoint_head))
            if head is not None
        )

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError(
                    "MaskRCNN: targets are required in training mode (call model.eval() to predict)"
                )
            check_targets(targets, len(images), heads=self.heads)
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
        if "mask_probs" in detection:
            if self.paste_masks:
                masks = paste_masks(
                    detection["mask_probs"], boxes, original_size, threshold=self.mask_threshold
                )
                out["masks"] = masks[:, None]
            else:
                out["mask_probs"] = detection["mask_probs"]
        if "keypoints" in detection:
            out["keypoints"] = scale_keypoints(detection["keypoints"], size, original_size)
            out["keypoints_scores"] = detection["keypoints_scores"]
        return out


def check_targets(
    targets: list[dict[str, Tensor]], num_images: int, heads: tuple[str, ...] = ("mask",)
) -> None:
    """Raises a ValueError naming the image and the problem when a training target is malformed. `heads`:
    the model's branches beyond boxes ("mask" needs masks, "keypoint" needs keypoints)."""
    if len(targets) != num_images:
        raise ValueError(f"MaskRCNN: got {num_images} images but {len(targets)} targets")
    needed = ("boxes", "labels") + tuple({"mask": "masks", "keypoint": "keypoints"}[h] for h in heads)
    for i, t in enumerate(targets):
        for key in needed:
            if key not in t:
                raise ValueError(f"MaskRCNN: target {i} has no '{key}' (needs {', '.join(needed)})")
        if "keypoint" in heads:
            kp, n = t["keypoints"], t["boxes"].shape[0]
            if kp.dim() != 3 or kp.shape[0] != n or kp.shape[-1] != 3 or not kp.is_floating_point():
                raise ValueError(
                    f"MaskRCNN: target {i} keypoints must be float [N, P, 3] (x, y, visibility) with N = "
                    f"{n} boxes, got {kp.dtype} {tuple(kp.shape)}"
                )
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
