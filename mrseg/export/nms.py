"""An NMS written for TorchScript: traced models then load with torch and mrseg_kernels, no torchvision."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor


def _overlaps(boxes: Tensor, others: Tensor, iou_threshold: float) -> Tensor:
    """bool [A, B]: IoU(boxes[a], others[b]) > iou_threshold (torchvision's IoU: areas without +1)."""
    x1, y1, x2, y2 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    ox1, oy1, ox2, oy2 = others[:, 0], others[:, 1], others[:, 2], others[:, 3]
    inter_w = (torch.min(x2, ox2) - torch.max(x1, ox1)).clamp(min=0)
    inter = inter_w * (torch.min(y2, oy2) - torch.max(y1, oy1)).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + ((ox2 - ox1) * (oy2 - oy1))[None, :] - inter
    return inter / union > iou_threshold


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, block: int = 128) -> Tensor:
    """Greedy NMS with torchvision.ops.nms semantics: boxes [K, 4] xyxy, scores [K] -> kept indices int64,
    by decreasing score (stable order for ties); a box is dropped when its IoU with a kept one is > threshold.
    """
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    boxes = boxes[order]
    # Greedy in blocks of score order: within a block, iterate "kept = alive and not overlapped by an
    # earlier kept box" to its fixed point (unique, reached in at most `block` steps, usually 2-3), then the
    # block's kept boxes suppress the later boxes still alive. Exact; few interpreter steps; no K x K matrix.
    n = boxes.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    earlier = torch.ones(block, block, dtype=torch.bool, device=boxes.device).triu(1)  # [j, i]: j before i
    for start in range(0, n, block):
        end = min(start + block, n)
        alive = ~suppressed[start:end]
        if not bool(alive.any()):
            continue
        local = _overlaps(boxes[start:end], boxes[start:end], iou_threshold)
        local = local & earlier[: end - start, : end - start]
        kept = alive
        while True:
            updated = alive & ~(local & kept[:, None]).any(0)
            if bool(torch.equal(updated, kept)):
                break
            kept = updated
        keep[start:end] = kept
        later = torch.nonzero(~suppressed[end:]).flatten() + end
        if later.numel() > 0:
            hit = _overlaps(boxes[start:end][kept], boxes[later], iou_threshold).any(0)
            suppressed[later] = hit
    return order[keep]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-category NMS (torchvision.ops.batched_nms semantics) by offsetting each category's boxes apart."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


@functools.cache
def scripted_batched_nms():
    """`batched_nms` compiled by TorchScript (once; compiling at import would warn on every CLI start)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, yet still what works
        return torch.jit.script(batched_nms)


@contextlib.contextmanager
def scripted_nms() -> Iterator[None]:
    """While tracing, the model's NMS calls go to the TorchScript `batched_nms` above, not torchvision's."""
    import mrseg.model.postprocess as postprocess
    import mrseg.model.rpn as rpn

    scripted = scripted_batched_nms()
    saved = [(m, m.batched_nms) for m in (postprocess, rpn)]
    try:
        for m, _ in saved:
            m.batched_nms = scripted
        yield
    finally:
        for m, original in saved:
            m.batched_nms = original
