"""Predictor(precision=...): bf16 autocast on the CPU gives float32 boxes / scores and bool masks that match
the fp32 detections (box coordinates at fp32 precision above 1000 px, masks nearly the same pixels), and
precisions a device or a model can't run are refused with a clear error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from mrseg.data.images import read_image
from mrseg.engine.predict.predictor import PredictError, Predictor, autocast_dtype
from mrseg.outputs.detections import Detections

IMAGE_SIZE = (1440, 1080)  # (w, h): photos upscaled so that box coordinates pass 1024 px


def build_spread_model(seed: int = 0):
    """A seeded r18-fpn run at 320 px whose detections are spread over the photo.

    The tiny model of conftest.py regresses every proposal to the whole image, so its boxes sit on the image
    border and can't show box precision. Here the RPN deltas are zero, so the proposals are anchors chosen by
    a (scaled, image-dependent) random objectness; RPN NMS at 0.3 keeps them apart. Scaled class weights
    separate the scores and scaled mask logits give masks clear insides, as trained weights do; 64 channels
    keep the mask head cheap.
    """
    from mrseg.model.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(
        "r18-fpn", 3, min_size=320, max_size=427, channels=64, rpn_nms_thresh=0.3, rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=20,
    )
    with torch.no_grad():
        model.rpn.head.anchor_deltas.weight.zero_()
        model.rpn.head.anchor_deltas.bias.zero_()
        model.rpn.head.objectness_logits.weight.mul_(10.0)
        model.roi_heads.box_predictor.cls_score.weight.mul_(5.0)
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 1.0, 0.9, 0.8]))
        model.roi_heads.mask_head.predictor.weight.mul_(100.0)
    return model.eval()


def match(ref: Detections, got: Detections, min_iou: float = 0.9):
    """Greedy, by ref score: each ref detection to the unused `got` one of the same label with the highest box
    IoU >= min_iou. -> (matched ref indices, their `got` indices)."""
    if len(ref) == 0 or len(got) == 0:
        return [], []
    iou = box_iou(torch.from_numpy(ref.boxes), torch.from_numpy(got.boxes)).numpy()
    iou[ref.labels[:, None] != got.labels[None, :]] = 0
    pairs_ref, pairs_got, used = [], [], set()
    for i in np.argsort(-ref.scores, kind="stable"):
        for j in np.argsort(-iou[i], kind="stable"):
            if iou[i, j] < min_iou:
                break
            if j not in used:
                used.add(j)
                pairs_ref.append(i)
                pairs_got.append(j)
                break
    return pairs_ref, pairs_got


def mask_iou(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def test_bf16_detections_are_float32_and_match_fp32(nuts_images, tiny_classes):
    model = build_spread_model()
    fp32 = Predictor(model=model, model_classes=tiny_classes, device="cpu", score=0.3)
    bf16 = Predictor(model=model, model_classes=tiny_classes, device="cpu", score=0.3, precision="bf16")
    assert fp32.autocast_dtype is None and bf16.autocast_dtype == torch.bfloat16
    total = matched = 0
    mask_ious, box_errors, interior = [], [], []
    for path in nuts_images[:3]:
        image = cv2.resize(read_image(str(path)), IMAGE_SIZE, interpolation=cv2.INTER_LINEAR)
        ref, got = fp32(image), bf16(image)
        assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32
        assert got.labels.dtype == np.int64 and np.asarray(got.masks).dtype == bool
        assert np.asarray(got.masks).shape == (len(got), IMAGE_SIZE[1], IMAGE_SIZE[0])
        i, j = match(ref, got)
        total += len(ref)
        matched += len(i)
        mask_ious += [mask_iou(ref.masks[a], got.masks[b]) for a, b in zip(i, j, strict=True)]
        box_errors.append(np.abs(ref.boxes[i] - got.boxes[j]).ravel())
        inside = (got.boxes > 1) & (got.boxes < np.array(IMAGE_SIZE * 2) - 1)
        interior.append(got.boxes[inside])
    box_errors, interior = np.concatenate(box_errors), np.concatenate(interior)
    assert total >= 30 and interior.max() > 1024
    # Measured (these 3 photos, 1 or 2 threads): 80-82% of the fp32 detections matched, mean mask IoU 0.99,
    # box error median 0.04 px / max 0.23 px, no interior coordinate on the bf16 grid; the unmatched ones are
    # near-ties of random weights (NMS keeps a neighbour). With boxes decoded in bf16 (the bug this guards
    # against): 60% matched, mask IoU 0.78, box error median 1.1 px / max 7.8 px, every coordinate on the
    # bf16 grid. All-empty masks would give mask IoU 0.
    assert matched / total >= 0.7, (matched, total)
    assert np.mean(mask_ious) >= 0.95, np.mean(mask_ious)
    assert np.median(box_errors) < 0.3 and box_errors.max() < 2.0, (np.median(box_errors), box_errors.max())
    on_bf16_grid = torch.from_numpy(interior).bfloat16().float().numpy() == interior
    assert on_bf16_grid.mean() < 0.2


def test_fp16_on_the_cpu_and_unknown_names_are_refused(tiny_model, tiny_classes):
    with pytest.raises(PredictError, match=r"fp16 runs on CUDA.*--precision bf16"):
        Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", precision="fp16")
    with pytest.raises(PredictError, match=r"--precision fp64: choose fp32, fp16, bf16"):
        Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", precision="fp64")
    with pytest.raises(PredictError, match=r"doesn't run on meta"):
        autocast_dtype("bf16", torch.device("meta"))
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16


def test_bf16_on_a_gpu_without_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(PredictError, match=r"no bfloat16 support; use --precision fp16"):
        autocast_dtype("bf16", torch.device("cuda:0"))


class _NotMaskRCNN(torch.nn.Module):
    """Stands in for the onnxruntime wrapper that `load_weights` gives for an .onnx: not our Mask R-CNN."""

    def forward(self, images):
        labels = torch.zeros(0, dtype=torch.int64)
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": labels} for _ in images]


def test_reduced_precision_needs_an_mrseg_mask_rcnn(tiny_classes):
    with pytest.raises(PredictError, match=r"bf16 runs mrseg's own Mask R-CNN.*_NotMaskRCNN.*precision fp32"):
        Predictor(model=_NotMaskRCNN(), model_classes=tiny_classes, device="cpu", precision="bf16")
    fp32 = Predictor(model=_NotMaskRCNN(), model_classes=tiny_classes, device="cpu")
    assert len(fp32(np.zeros((8, 8, 3), np.uint8))) == 0
