import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from mrseg.model.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_hand_computed():
    # ratio = h / w; area = size^2: (w, h) = (32 / sqrt(r), 32 * sqrt(r)), halved and rounded
    a = cell_anchors(32, (0.5, 1.0, 2.0))
    assert a.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]


def test_grid_order_and_strides():
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(1.0,))
    p2, p3 = gen((64, 96), [(16, 24), (8, 12)])
    assert p2.shape == (16 * 24, 4) and p3.shape == (8 * 12, 4)
    # (y, x) row-major: second anchor is one stride (4 px) to the right, row 1 starts one stride down
    assert p2[0].tolist() == [-16.0, -16.0, 16.0, 16.0]
    assert p2[1].tolist() == [-12.0, -16.0, 20.0, 16.0]
    assert p2[24].tolist() == [-16.0, -12.0, 16.0, 20.0]
    assert p3[1].tolist() == [-24.0, -32.0, 40.0, 32.0]


def test_matches_torchvision():
    sizes = (32, 64, 128, 256, 512)
    ours = AnchorGenerator(sizes=sizes, aspect_ratios=(0.5, 1.0, 2.0))
    tv = TVAnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
    padded = (96, 128)
    feats = [torch.zeros(2, 1, padded[0] // s, padded[1] // s) for s in (4, 8, 16, 32, 64)]
    expected = tv(ImageList(torch.zeros(2, 3, *padded), [(90, 120), (96, 100)]), feats)[0]
    got = torch.cat(ours(padded, [f.shape[-2:] for f in feats]))
    assert torch.equal(got, expected)
