import torch
from torchvision.models import resnet18, resnet34
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.backbone import build_resnet_fpn
from mrseg.model.convert import torchvision_to_mrseg


def test_pyramid_shapes_and_strides():
    model = build_resnet_fpn(18).eval()
    with torch.no_grad():
        levels = model(torch.rand(2, 3, 96, 160))
    assert [tuple(p.shape) for p in levels] == [
        (2, 256, 24, 40),
        (2, 256, 12, 20),
        (2, 256, 6, 10),
        (2, 256, 3, 5),
        (2, 256, 2, 3),  # P6: stride-2 subsampling of P5
    ]


def test_matches_torchvision_backbone_with_fpn():
    torch.manual_seed(0)
    for make, depth in ((resnet18, 18), (resnet34, 34)):
        tv = _resnet_fpn_extractor(make(norm_layer=FrozenBatchNorm2d), 3).eval()
        ours = build_resnet_fpn(depth).eval()
        state = {
            k.removeprefix("backbone."): v
            for k, v in torchvision_to_mrseg({"backbone." + k: v for k, v in tv.state_dict().items()}).items()
        }
        ours.load_state_dict(state)
        x = torch.rand(1, 3, 64, 96)
        with torch.no_grad():
            expected = list(tv(x).values())
            got = ours(x)
        assert len(got) == len(expected) == 5
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_frozen_stages_and_batchnorm():
    model = build_resnet_fpn(18, freeze_at=2)
    assert not any(p.requires_grad for p in model.bottom_up.stem.parameters())
    assert not any(p.requires_grad for p in model.bottom_up.res2.parameters())
    assert all(p.requires_grad for p in model.bottom_up.res3.parameters())
    assert all(p.requires_grad for p in model.fpn.parameters())
    assert isinstance(model.bottom_up.res4[0].bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in build_resnet_fpn(18, freeze_at=0).parameters())
