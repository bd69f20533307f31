"""mrseg_kernels.roi_align against torchvision.ops.roi_align (forward and backward) and against values derived
by hand from the RoIAlign definition."""

import pytest
import torch
import torchvision

import mrseg_kernels
from mrseg_kernels import roi_align


def random_rois(n_rois, batch, height, width, scale, generator, dtype=torch.float32, margin=0.25):
    """[n_rois, 5] rois in image pixels (image = feature map / scale), some reaching past the map's borders."""
    img_h, img_w = height / scale, width / scale
    lo = torch.tensor([-margin * img_w, -margin * img_h])
    span = torch.tensor([(1 + 2 * margin) * img_w, (1 + 2 * margin) * img_h])
    p1 = lo + torch.rand(n_rois, 2, generator=generator) * span
    p2 = p1 + torch.rand(n_rois, 2, generator=generator) * span / 2
    idx = torch.randint(0, batch, (n_rois, 1), generator=generator).float()
    return torch.cat([idx, p1, p2], dim=1).to(dtype)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torchvision_float32(aligned, sampling_ratio, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 19, 23, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(40, 2, 19, 23, 0.5, g)
    x_ours = x.clone().requires_grad_()
    x_ref = x.contiguous().requires_grad_()
    ours = roi_align(x_ours, rois, (7, 6), 0.5, sampling_ratio, aligned)
    ref = torchvision.ops.roi_align(x_ref, rois, (7, 6), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(ref.shape, generator=g)
    ours.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    assert x_ours.grad.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_op_is_registered():
    assert hasattr(torch.ops.mrseg, "roi_align")
    assert isinstance(mrseg_kernels.with_cuda(), bool)
