"""Validation during training: run the model over a COCO dataset, score box, mask and keypoint AP with
pycocotools (the heads the model has)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mrseg.data.coco import CocoDataset, collate
from mrseg.engine.evaluate.evaluator import evaluate
from mrseg.outputs.detections import Detections
from mrseg.outputs.records import coco_results, instance_records

# pycocotools' OKS has sigmas for COCO's 17 person keypoints only
OKS_KEYPOINTS = 17
METRIC_NAMES = {"bbox": "box AP", "segm": "mask AP", "keypoints": "keypoint AP"}


def validation_types(heads: tuple[str, ...], num_keypoints: int = OKS_KEYPOINTS) -> tuple[str, ...]:
    """The iou types scored for a model with these heads, the one best.pt follows LAST: bbox, then segm with
    a mask head, then keypoints with a keypoint head of COCO's 17 keypoints (other counts have no OKS
    sigmas)."""
    types = ("bbox",) + (("segm",) if "mask" in heads else ())
    if "keypoint" in heads and num_keypoints == OKS_KEYPOINTS:
        types += ("keypoints",)
    return types


def detections_to_results(
    output: dict[str, torch.Tensor], image_id: int, classes: list[dict], height: int, width: int
) -> list[dict]:
    """One image's model output (boxes [D, 4] xyxy, scores [D], labels [D] in 1..K, masks bool [D, 1, H, W],
    keypoints [D, P, 3], keypoints_scores [D, P]) on an image of `height` x `width` -> COCO results exactly as
    results.json and `mrseg eval --images` have them (`records.coco_results`; category_id from `classes`)."""

    def array(key: str, dtype=torch.float32) -> np.ndarray | None:
        return output[key].detach().to(dtype).cpu().numpy() if key in output else None

    masks = array("masks", torch.bool)
    det = Detections(width, height, array("boxes"), array("scores"), array("labels", torch.int64))
    det.masks = None if masks is None else masks[:, 0]
    det.keypoints, det.keypoint_scores = array("keypoints"), array("keypoints_scores")
    return coco_results(image_id, instance_records(det, classes, mask_format="rle"), height, width)


@torch.no_grad()
def predict_dataset(
    model: nn.Module, dataset: CocoDataset, device: torch.device, batch_size: int = 2, workers: int = 0
) -> list[dict]:
    """COCO results for every image of `dataset` (no augmentation)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        for images, targets in loader:
            outputs = model([img.to(device) for img in images])
            for image, out, target in zip(images, outputs, targets, strict=True):
                height, width = image.shape[-2:]
                results += detections_to_results(out, int(target["image_id"]), dataset.classes, height, width)
    finally:
        model.train(was_training)
    return results


def validate(
    model: nn.Module,
    dataset: CocoDataset,
    device: torch.device,
    batch_size: int = 2,
    workers: int = 0,
    iou_types: tuple[str, ...] = ("bbox", "segm"),
) -> dict[str, dict[str, float]]:
    """{"bbox": {"AP", "AP50", ...}, "segm": {...}, "keypoints": {...}} for `iou_types` on `dataset`'s images
    (pycocotools' values, 0..1; see `validation_types`)."""
    results = predict_dataset(model, dataset, device, batch_size, workers)
    ids = [info["id"] for info in dataset.images]
    if not results:
        return {t: {"AP": 0.0, "AP50": 0.0, "AP75": 0.0} for t in iou_types}
    return evaluate(dataset.ann_file, results, iou_types, img_ids=ids)
