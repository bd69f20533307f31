import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mrseg.model.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform


def test_matches_torchvision_numerics():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 97, 130, generator=g), torch.rand(3, 150, 61, generator=g)]
    tv = GeneralizedRCNNTransform(120, 200, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    ours = ImageTransform(min_size=120, max_size=200).eval()
    ref, _ = tv(images)
    batch, sizes, _ = ours(images)
    assert sizes == ref.image_sizes
    assert batch.shape == ref.tensors.shape and batch.shape[-1] % 32 == 0 and batch.shape[-2] % 32 == 0
    assert torch.equal(batch, ref.tensors)


def test_resizes_targets_like_torchvision():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 60, 90, generator=g)
    masks = (torch.rand(2, 60, 90, generator=g) > 0.5).to(torch.uint8)
    target = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0], [10.0, 5.0, 80.0, 59.0]]), "masks": masks}
    tv = GeneralizedRCNNTransform(100, 1000, list(IMAGENET_MEAN), list(IMAGENET_STD)).train()
    ours = ImageTransform(min_size=100, max_size=1000).train()
    _, ref = tv([image], [dict(target)])
    _, _, got = ours([image], [dict(target)])
    assert torch.equal(got[0]["boxes"], ref[0]["boxes"])
    assert torch.equal(got[0]["masks"], ref[0]["masks"])
    assert torch.equal(target["masks"], masks)  # input not modified


def test_long_side_limit():
    batch, sizes, _ = ImageTransform(min_size=800, max_size=1333).eval()([torch.rand(3, 100, 1000)])
    assert sizes == [(133, 1333)]
    assert batch.shape == (1, 3, 160, 1344)


def test_bad_input_errors():
    t = ImageTransform()
    with pytest.raises(ValueError, match=r"images\[0\]"):
        t([torch.rand(1, 3, 10, 10)])
    with pytest.raises(TypeError, match="float"):
        t([torch.zeros(3, 10, 10, dtype=torch.uint8)])


def test_an_extreme_strip_keeps_one_pixel_where_torchvision_raises():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(3, 30, 5000, generator=g)  # fitted into max_size 128: 0.77 x 128 px
    tv = GeneralizedRCNNTransform(96, 128, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    with pytest.raises(RuntimeError, match="greater than 0"):
        tv([image])
    target = {
        "boxes": torch.tensor([[100.0, 3.0, 2600.0, 27.0]]),
        "masks": torch.ones(1, 30, 5000, dtype=torch.uint8),
    }
    ours = ImageTransform(min_size=96, max_size=128).train()
    batch, sizes, (got,) = ours([image], [target])
    assert sizes == [(1, 128)] and batch.shape == (1, 3, 32, 128)
    assert torch.isfinite(batch).all() and batch[0, :, 1:].abs().max() == 0  # the rest is padding
    assert got["masks"].shape == (1, 1, 128) and got["masks"].all()
    torch.testing.assert_close(got["boxes"], torch.tensor([[2.56, 0.1, 66.56, 0.9]]))
