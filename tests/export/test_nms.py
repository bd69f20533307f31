"""mrseg.export.nms: the TorchScript NMS keeps exactly what torchvision's keeps, in the same order."""

import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_coordinate_trick

from mrseg.export.nms import batched_nms, scripted_batched_nms, scripted_nms


def random_boxes(k, generator, spread=300.0, size=200.0):
    xy = torch.rand(k, 2, generator=generator) * spread
    return torch.cat([xy, xy + torch.rand(k, 2, generator=generator) * size + 1], 1)


@pytest.mark.parametrize("k", [0, 1, 2, 127, 128, 129, 700])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_matches_torchvision(k, threshold):
    g = torch.Generator().manual_seed(k)
    boxes = random_boxes(k, g)
    scores = torch.rand(k, generator=g)
    scores[: k // 4] = 0.5  # ties: kept in index order, as torchvision does
    idxs = torch.randint(0, 3, (k,), generator=g)
    scripted = scripted_batched_nms()
    got = scripted(boxes, scores, idxs, threshold)
    # torchvision takes this path while tracing; its other (per-class loop) path orders ties differently
    assert torch.equal(got, _batched_nms_coordinate_trick(boxes, scores, idxs, threshold))
    assert torch.equal(batched_nms(boxes, scores, torch.zeros_like(idxs), threshold),
                       torchvision.ops.nms(boxes, scores, threshold))  # fmt: skip


def test_dense_overlapping_boxes():
    # RPN-like: many near-duplicates, so suppression chains run across block boundaries.
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(1000, g, spread=40.0, size=30.0)
    scores = torch.rand(1000, generator=g)
    keep = batched_nms(boxes, scores, torch.zeros(1000, dtype=torch.int64), 0.5)
    assert 0 < keep.numel() < 500
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))


def test_patch_is_scoped():
    import mrseg.model.postprocess as postprocess
    import mrseg.model.rpn as rpn

    before = (postprocess.batched_nms, rpn.batched_nms)
    with scripted_nms():
        assert postprocess.batched_nms is scripted_batched_nms() and rpn.batched_nms is scripted_batched_nms()
    assert (postprocess.batched_nms, rpn.batched_nms) == before
