"""Validation during training: run the model over a COCO dataset, score box, mask and keypoint AP with
pycocotools (the heads the model has)."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from mrseg.data.coco import CocoDataset, collate
from mrseg.engine.evaluate.evaluator import evaluate

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


def detections_to_results(output: dict[str, torch.Tensor], image_id: int, classes: list[dict]) -> list[dict]:
    """One image's model output (boxes [D, 4] xyxy, scores [D], labels [D] in 1..K, masks bool [D, 1, H, W],
    keypoints [D, P, 3]) -> COCO result dicts (bbox xywh, RLE segmentation, keypoints [x, y, v] * P;
    category_id from `classes[label - 1]`; score: the box score, what pycocotools ranks keypoints by too)."""
    boxes = output["boxes"].detach().float().cpu().numpy()
    scores = output["scores"].detach().float().cpu().numpy()
    labels = output["labels"].detach().cpu().numpy()
    masks = output["masks"][:, 0].detach().cpu().numpy().astype(np.uint8) if "masks" in output else None
    keypoints = output["keypoints"].detach().float().cpu().numpy() if "keypoints" in output else None
    results = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        r = {
            "image_id": int(image_id),
            "category_id": int(classes[int(labels[i]) - 1]["id"]),
            "score": float(scores[i]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
        }
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i]))
            rle["counts"] = rle["counts"].decode("ascii")
            r["segmentation"] = rle
        if keypoints is not None:
            r["keypoints"] = [round(float(v), 2) for v in keypoints[i].flatten()]
        results.append(r)
    return results


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
            for out, target in zip(outputs, targets, strict=True):
                results += detections_to_results(out, int(target["image_id"]), dataset.classes)
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
