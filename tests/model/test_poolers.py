import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign

from mrseg.model.poolers import MultiScaleRoIAlign, assign_fpn_levels


def _square(side: float) -> list[float]:
    return [10.0, 10.0, 10.0 + side, 10.0 + side]


def test_level_assignment_hand_computed():
    # k = floor(4 + log2(side / 224)), clamped to 2..5, returned relative to level 2
    boxes = torch.tensor([_square(s) for s in (224, 223, 112, 111, 448, 56, 10, 2000, 0.0)])
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [2, 1, 1, 0, 3, 0, 0, 3, 0]


def test_level_assignment_non_square():
    # 100 x 400: sqrt(area) = 200 -> floor(4 + log2(200/224)) = 3 -> index 1
    boxes = torch.tensor([[0.0, 0.0, 100.0, 400.0]])
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [1]


@pytest.mark.parametrize("aligned", [False, True])
def test_pooler_matches_torchvision_layout(aligned):
    g = torch.Generator().manual_seed(0)
    size = (128, 160)
    feats = [torch.randn(2, 8, size[0] // s, size[1] // s, generator=g) for s in (4, 8, 16, 32)]
    xy = torch.rand(40, 2, generator=g) * 100
    wh = torch.rand(40, 2, generator=g) * 120 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    per_image = [boxes[:25], boxes[25:]]
    ours = MultiScaleRoIAlign(output_size=7, sampling_ratio=2, aligned=aligned)(feats, per_image)
    assert ours.shape == (40, 8, 7, 7)
    if not aligned:  # torchvision's MultiScaleRoIAlign is aligned=False
        tv = TVMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        expected = tv({str(i): f for i, f in enumerate(feats)}, per_image, [size, size])
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    else:
        from torchvision.ops import roi_align

        levels = assign_fpn_levels(boxes, 2, 5)
        rois = torch.cat([torch.tensor([0.0] * 25 + [1.0] * 15)[:, None], boxes], 1)
        for i in range(40):
            lvl = int(levels[i])
            ref = roi_align(feats[lvl], rois[i : i + 1], 7, 1 / 2 ** (lvl + 2), 2, aligned=True)
            torch.testing.assert_close(ours[i : i + 1], ref, rtol=1e-5, atol=1e-5)


def test_pooler_with_no_boxes():
    feats = [torch.randn(1, 4, 32 // s, 32 // s) for s in (4, 8, 16, 32)]
    out = MultiScaleRoIAlign(output_size=14)(feats, [torch.zeros(0, 4)])
    assert out.shape == (0, 4, 14, 14)
