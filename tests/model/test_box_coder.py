import math

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from mrseg.model.box_coder import BoxCoder, clip_boxes


def test_encode_hand_computed():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    tgt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), w 20, h 20
    d = coder.encode(tgt, ref)
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(d, expected)


def test_decode_inverts_encode_and_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 100
    ref = torch.cat([ref, ref + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    tgt = torch.rand(50, 2, generator=g) * 100
    tgt = torch.cat([tgt, tgt + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    ours = BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = ours.encode(tgt, ref)
    torch.testing.assert_close(ours.decode(deltas, ref)[:, 0], tgt, rtol=0, atol=1e-3)
    tv = TVBoxCoder((10.0, 10.0, 5.0, 5.0))
    assert torch.equal(deltas, tv.encode_single(tgt, ref))
    multi = torch.randn(50, 12, generator=g)  # 3 boxes per reference
    assert torch.equal(ours.decode(multi, ref), tv.decode_single(multi, ref).reshape(50, 3, 4))


def test_decode_clamps_huge_scales():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    box = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    width = box[0, 0, 2] - box[0, 0, 0]
    assert torch.isfinite(box).all()
    torch.testing.assert_close(width, torch.tensor(10 * 1000 / 16.0))


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, -1.0, 30.0, 8.0], [3.0, 4.0, 5.0, 6.0]])
    expected = torch.tensor([[0.0, 0.0, 20.0, 8.0], [3.0, 4.0, 5.0, 6.0]])
    assert torch.equal(clip_boxes(boxes, (10, 20)), expected)


def test_decode_of_low_precision_deltas_keeps_float32_coordinates():
    # under autocast the deltas come from a bf16 layer; the boxes must still be float32 at 1000+ px
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    g = torch.Generator().manual_seed(0)
    xy = 1000 + torch.rand(50, 2, generator=g) * 900
    refs = torch.cat([xy, xy + 20 + torch.rand(50, 2, generator=g) * 80], 1)
    deltas = (torch.randn(50, 8, generator=g) * 0.5).to(torch.bfloat16)
    boxes = coder.decode(deltas, refs)
    assert boxes.dtype == torch.float32 and boxes.shape == (50, 2, 4)
    torch.testing.assert_close(boxes, coder.decode(deltas.float(), refs), rtol=0, atol=1e-4)
    assert (boxes != boxes.to(torch.bfloat16).float()).any()  # not rounded to bf16's 8 px grid
