"""torch.ops.mrseg.roi_align under torch.autocast on the CPU: the features keep the dtype the autocast convs
give them, the RoIs stay float32, and the result matches torchvision's float32 RoIAlign on the same
bf16-rounded features; RoIs above 1024 px keep their sub-pixel position; torch.compile traces it."""

import pytest
import torch
import torchvision

from mrseg_kernels import roi_align

# the result is rounded to bfloat16 once (8 significant bits): relative error <= 2^-9, so 2^-8 has margin
BF16_RTOL = 2.0**-8
ATOL = 1e-5


def rois_at(generator, n, lo, hi, batch=1):
    """[n, 5] float32 rois with corners in [lo, hi) image pixels and fractional parts everywhere."""
    p1 = lo + torch.rand(n, 2, generator=generator) * (hi - lo) * 0.7
    p2 = p1 + 8 + torch.rand(n, 2, generator=generator) * (hi - lo) * 0.3
    idx = torch.randint(0, batch, (n, 1), generator=generator).float()
    return torch.cat([idx, p1, p2], dim=1)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("aligned", [False, True])
def test_bf16_features_from_an_autocast_conv_match_torchvision_on_rounded_features(channels_last, aligned):
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    image = torch.randn(2, 3, 40, 48, generator=g)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    rois = rois_at(g, 30, -10.0, 200.0, batch=2)  # stride 4: a 160 x 192 image, some rois past its border
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = conv(image)
        out = roi_align(features, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=aligned)
    assert features.dtype == torch.bfloat16 and rois.dtype == torch.float32
    assert out.dtype == torch.bfloat16  # the features' dtype: what the next autocast conv / linear casts to
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    ref = torchvision.ops.roi_align(features.float().contiguous(), rois, (7, 7), 0.25, 2, aligned)
    assert ref.abs().mean() > 0.1  # the comparison below is not one of zeros
    torch.testing.assert_close(out.float(), ref, rtol=BF16_RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rois_above_1024_px_keep_their_sub_pixel_position(dtype):
    """Half-precision features, float32 rois at 1024..2048 px: the same result as float32 features. Had the
    rois been cast to the features' dtype (what `torch.library.register_autocast` does to every floating
    input), they would snap to a 1 px (fp16) or 8 px (bf16) grid: the last asserts show that is detected."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 4, 512, 512, generator=g).to(dtype)  # P2 of a 2048 x 2048 image
    rois = rois_at(g, 40, 1024.0, 2040.0)
    assert (rois[:, 1:] % 1 != 0).float().mean() > 0.9
    with torch.autocast("cpu", dtype=dtype):
        out = roi_align(features, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True)
    exact = roi_align(features.float(), rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True)
    assert out.dtype == dtype
    rtol = BF16_RTOL if dtype == torch.bfloat16 else 2.0**-10
    torch.testing.assert_close(out.float(), exact, rtol=rtol, atol=ATOL)
    for snapped in (rois.to(torch.float16).float(), rois.to(torch.bfloat16).float()):
        moved = roi_align(features.float(), snapped, (7, 7), 0.25, 2, True)
        assert not torch.allclose(moved, exact, rtol=rtol, atol=ATOL)


def test_float32_features_under_autocast_stay_float32():
    """The op casts nothing: float32 features (say, after a GroupNorm, which autocast runs in float32) give a
    float32 result, which the next autocast layer rounds itself; casting the whole feature map first would
    cost a pass over it and lose precision."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 8, 32, 32, generator=g)
    rois = rois_at(g, 10, 0.0, 120.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(features, rois, 5, 0.25, 2, True)
    assert out.dtype == torch.float32
    assert torch.equal(out, roi_align(features, rois, 5, 0.25, 2, True))


def test_torch_compile_under_autocast_forward_and_backward():
    g = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    image = torch.randn(1, 3, 24, 24, generator=g)
    rois = rois_at(g, 6, 0.0, 90.0)

    def pool(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pooled = roi_align(conv(x), rois, (3, 3), 0.25, 2, True)
        return pooled, pooled.float().relu().sum()

    compiled = torch.compile(pool, backend="aot_eager", fullgraph=True)
    x1, x2 = image.clone().requires_grad_(), image.clone().requires_grad_()
    (p1, y1), (p2, y2) = compiled(x1), pool(x2)
    assert p1.dtype == p2.dtype == torch.bfloat16
    y1.backward()
    y2.backward()
    torch.testing.assert_close(p1, p2)
    assert x1.grad.dtype == torch.float32 and x1.grad.abs().sum() > 0
    torch.testing.assert_close(x1.grad, x2.grad)
