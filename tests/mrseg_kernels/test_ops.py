"""mrseg_kernels.roi_align (torch.ops.mrseg.roi_align): forward and backward against
torchvision.ops.roi_align, against values worked out by hand from the RoIAlign definition, and through
gradcheck, torch.compile and torch.export.

The CPU op has three code paths: NHWC for channels_last input, and for NCHW input a direct per-plane path
(few bilinear taps per pixel) or a tiled one (channel blocks transposed to NHWC, when the RoIs read each pixel
about once or more). The "sparse" cases below (few small RoIs on a large map) take the direct path, the
"dense" cases (many RoIs on a small map) the tiled one.
"""

import pytest
import torch
import torchvision

import mrseg_kernels
from mrseg_kernels import roi_align

NO_CUDA = "no CUDA device: run on a GPU machine"


def random_rois(n_rois, batch, height, width, scale, generator, max_size=0.5, margin=0.25):
    """[n_rois, 5] float32 rois in image pixels (image = map / scale); some reach past the map's borders."""
    img_h, img_w = height / scale, width / scale
    lo = torch.tensor([-margin * img_w, -margin * img_h])
    span = torch.tensor([(1 + 2 * margin) * img_w, (1 + 2 * margin) * img_h])
    p1 = lo + torch.rand(n_rois, 2, generator=generator) * span
    p2 = p1 + torch.rand(n_rois, 2, generator=generator) * torch.tensor([img_w, img_h]) * max_size
    idx = torch.randint(0, batch, (n_rois, 1), generator=generator).float()
    return torch.cat([idx, p1, p2], dim=1)


# (batch, channels, height, width, n_rois, max RoI size as a fraction of the image)
DENSE = (2, 20, 13, 17, 50, 0.6)  # 20 channels: a full block and a partial one in the tiled path
SPARSE = (1, 5, 48, 64, 3, 0.1)


def run_both(x, rois, output_size, spatial_scale, sampling_ratio, aligned, grad_seed=1):
    """Outputs and input gradients of ours and torchvision's (which gets a contiguous copy of x)."""
    x_ours = x.detach().clone().requires_grad_()
    x_ref = x.detach().contiguous().requires_grad_()
    ours = roi_align(x_ours, rois, output_size, spatial_scale, sampling_ratio, aligned)
    ref = torchvision.ops.roi_align(x_ref, rois, output_size, spatial_scale, sampling_ratio, aligned)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=ref.dtype)
    ours.backward(grad.to(ours.device))
    ref.backward(grad.to(ref.device))
    return ours, ref, x_ours.grad, x_ref.grad


@pytest.mark.parametrize("case", [DENSE, SPARSE], ids=["dense", "sparse"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
def test_matches_torchvision_float32(case, channels_last, aligned, sampling_ratio):
    n, c, h, w, k, size = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(k, n, h, w, 0.5, g, max_size=size)
    ours, ref, grad_ours, grad_ref = run_both(x, rois, (7, 6), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert grad_ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert grad_ours.abs().sum() > 0  # the case exercises the backward


@pytest.mark.parametrize("case", [DENSE, SPARSE], ids=["dense", "sparse"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_torchvision_float64(case, channels_last):
    n, c, h, w, k, size = case
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(k, n, h, w, 0.25, g, max_size=size).double()
    ours, ref, grad_ours, grad_ref = run_both(x, rois, 5, 0.25, -1, True)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [DENSE, SPARSE], ids=["dense", "sparse"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_half_types_accumulate_in_float(dtype, tol, case, channels_last):
    """Half inputs give the float32 result (on the same rounded inputs) rounded once to the half type."""
    n, c, h, w, k, size = case
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(k, n, h, w, 0.5, g, max_size=size)
    grad = torch.randn(k, c, 7, 7, generator=g).to(dtype)

    x_ours = x.clone().requires_grad_()
    ours = roi_align(x_ours, rois, 7, 0.5, 2, True)
    ours.backward(grad)
    x_ref = x.float().contiguous().requires_grad_()
    ref = torchvision.ops.roi_align(x_ref, rois, 7, 0.5, 2, True)
    ref.backward(grad.float())

    assert ours.dtype == dtype and x_ours.grad.dtype == dtype
    torch.testing.assert_close(ours.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x_ours.grad.float(), x_ref.grad, rtol=tol, atol=tol)
    # rois given in the half type too (torchvision's convention) give the same result up to their rounding.
    torch.testing.assert_close(
        roi_align(x, rois.to(dtype), 7, 0.5, 2, True).float(),
        torchvision.ops.roi_align(x.float().contiguous(), rois.to(dtype).float(), 7, 0.5, 2, True),
        rtol=tol,
        atol=tol,
    )


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_edge_case_boxes(aligned, channels_last):
    """Degenerate (zero-size, inverted), partly outside, wholly outside and whole-image boxes."""
    x = torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(4))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = torch.tensor(
        [
            [0, 5.0, 5.0, 5.0, 5.0],  # a point
            [1, 3.0, 2.0, 3.0, 9.0],  # zero width
            [0, 8.0, 8.0, 2.0, 3.0],  # inverted
            [1, -6.0, -4.0, 4.0, 3.0],  # partly outside (top-left)
            [0, 9.0, 7.0, 15.0, 13.0],  # partly outside (bottom-right)
            [1, 30.0, 30.0, 40.0, 45.0],  # wholly outside
            [0, -20.0, -20.0, -12.0, -11.0],  # wholly outside, negative
            [1, 0.0, 0.0, 12.0, 10.0],  # the whole map
            [0, 11.0, 9.0, 11.9, 9.9],  # within the last pixel
        ]
    )
    for sampling_ratio in (-1, 2):
        ours, ref, grad_ours, grad_ref = run_both(x, rois, (3, 4), 1.0, sampling_ratio, aligned)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-5)
        # Wholly outside (more than one pixel beyond the border): nothing is sampled.
        assert torch.all(ours[5:7] == 0)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_zero_rois(channels_last):
    x = torch.randn(2, 4, 8, 8).requires_grad_()
    xi = x.to(memory_format=torch.channels_last) if channels_last else x
    out = roi_align(xi, torch.zeros(0, 5), (7, 7), 0.5, 2, True)
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.all(x.grad == 0)
    assert roi_align(xi, [torch.zeros(0, 4), torch.zeros(0, 4)], 7).shape == (0, 4, 7, 7)


def test_list_of_boxes_and_output_size_forms():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 16, 16, generator=g)
    boxes = [random_rois(n, 1, 16, 16, 1.0, g)[:, 1:] for n in (4, 0, 3)]
    ours = roi_align(x, boxes, 5, 1.0, 2, True)
    ref = torchvision.ops.roi_align(x, boxes, 5, 1.0, 2, True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    torch.testing.assert_close(roi_align(x, rois, [5, 5], 1.0, 2, True), ours, rtol=0, atol=0)
    torch.testing.assert_close(torch.ops.mrseg.roi_align(x, rois, 1.0, 5, 5, 2, True), ours, rtol=0, atol=0)


def test_non_contiguous_input():
    g = torch.Generator().manual_seed(6)
    base = torch.randn(2, 6, 12, 14, generator=g)
    x = base[:, ::2, :, 1:]  # strided view, neither contiguous nor channels_last
    rois = random_rois(10, 2, 12, 13, 1.0, g)
    torch.testing.assert_close(
        roi_align(x, rois, 4, 1.0, 2, False),
        torchvision.ops.roi_align(x.contiguous(), rois, 4, 1.0, 2, False),
    )


# A ramp f(y, x) = 10 y + x is linear, so bilinear interpolation reproduces it exactly inside the map, and the
# mean over a bin's regularly spaced sample points (symmetric about the bin centre) is f at the bin centre.
def ramp(height, width):
    y = torch.arange(height, dtype=torch.float32)[:, None]
    x = torch.arange(width, dtype=torch.float32)[None, :]
    return (10 * y + x)[None, None]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_ramp_values_by_hand(channels_last):
    f = ramp(8, 12)
    if channels_last:  # two channels (with C = 1 the NHWC and NCHW layouts coincide)
        f = torch.cat([f, 2 * f], dim=1).to(memory_format=torch.channels_last)
    # RoI x 1..9, y 2..6, 2x2 bins, not aligned: bins are 4 wide and 2 tall,
    # centres x = 3, 7 and y = 3, 5 -> f = [[33, 37], [53, 57]].
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 6.0]])
    expected = torch.tensor([[33.0, 37.0], [53.0, 57.0]])
    for sampling_ratio in (-1, 1, 2, 3):
        out = roi_align(f, rois, 2, 1.0, sampling_ratio, False)
        torch.testing.assert_close(out[0, 0], expected)
    # aligned=True shifts the RoI by -0.5: centres x = 2.5, 6.5 and y = 2.5, 4.5.
    out = roi_align(f, rois, 2, 1.0, 2, True)
    torch.testing.assert_close(out[0, 0], torch.tensor([[27.5, 31.5], [47.5, 51.5]]))
    # spatial_scale 0.5: the image RoI 2..18 x 4..12 is 1..9 x 2..6 on the map, as above.
    out = roi_align(f, torch.tensor([[0, 2.0, 4.0, 18.0, 12.0]]), 2, 0.5, 2, False)
    torch.testing.assert_close(out[0, 0], expected)
    if channels_last:
        torch.testing.assert_close(out[0, 1], 2 * expected)


def test_border_rules_by_hand():
    f = ramp(5, 6)  # rows 0..4, f = 10 y + x
    cases = [
        # (RoI x1, y1, x2, y2), one sample at the centre (sampling_ratio=1, 1x1 output, not aligned)
        ((2.0, -1.0, 4.0, 0.0), 3.0),  # centre y = -0.5, in [-1, 0]: clamped to row 0 -> f(0, 3)
        ((2.0, -3.0, 4.0, -2.0), 0.0),  # centre y = -2.5 < -1: outside, contributes 0
        ((2.0, 4.0, 4.0, 5.0), 43.0),  # centre y = 4.5, past the last row but <= H: reads row 4 -> f(4, 3)
        ((5.0, 1.0, 7.0, 3.0), 25.0),  # centre (2, 6), x = W: reads the last column -> f(2, 5) = 25
        ((6.5, 1.0, 8.5, 3.0), 0.0),  # centre x = 7.5 > W: outside
        # 0.5 x 0.2 box, not aligned: its size is clamped to 1 x 1, centre (y, x) = (1.5, 2.5) -> 17.5
        ((2.0, 1.0, 2.5, 1.2), 17.5),
    ]
    for box, expected in cases:
        out = roi_align(f, torch.tensor([[0.0, *box]]), 1, 1.0, 1, False)
        assert out.item() == pytest.approx(expected, abs=1e-5), box


def test_single_pixel_weights_and_gradient_by_hand():
    """A unit impulse at (y=2, x=3): the output is that pixel's bilinear weight at the sample point, and the
    gradient spreads 1 over the four pixels around the sample with the bilinear weights."""
    f = torch.zeros(1, 1, 6, 7)
    f[0, 0, 2, 3] = 1.0
    # RoI x 3..4, y 1.5..3: one sample at the centre (y, x) = (2.25, 3.5).
    # Weight of pixel (2, 3) = (1 - 0.25) * (1 - 0.5) = 0.375.
    rois = torch.tensor([[0, 3.0, 1.5, 4.0, 3.0]])
    x = f.clone().requires_grad_()
    out = roi_align(x, rois, 1, 1.0, 1, False)
    assert out.item() == pytest.approx(0.375)
    out.backward()
    expected = torch.zeros(6, 7)
    expected[2, 3], expected[2, 4], expected[3, 3], expected[3, 4] = 0.375, 0.375, 0.125, 0.125
    torch.testing.assert_close(x.grad[0, 0], expected)
    # 2x2 samples at y = 1.875, 2.625 and x = 3.25, 3.75. Pixel (2, 3) is the upper neighbour of y = 1.875
    # (weight 0.875) and the lower one of y = 2.625 (weight 1 - 0.625 = 0.375); the left neighbour of both x
    # (weights 0.75 and 0.25). Mean over the 4 samples: (0.875 + 0.375) * (0.75 + 0.25) / 4 = 0.3125.
    assert roi_align(f, rois, 1, 1.0, 2, False).item() == pytest.approx(0.3125)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(
    "n_rois,sampling_ratio", [(1, 1), (6, -1), (6, 2)], ids=["sparse", "dense-adaptive", "dense"]
)
def test_gradcheck_float64(channels_last, aligned, n_rois, sampling_ratio):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(n_rois, 2, 6, 7, 0.5, g).double()
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 3), 0.5, sampling_ratio, aligned), (x,))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck(channels_last):
    """torch.library.opcheck: schema, fake (meta) implementation incl. strides, autograd registration."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 4, 9, 10, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(5, 2, 9, 10, 0.5, g)
    torch.library.opcheck(torch.ops.mrseg.roi_align.default, (x.requires_grad_(), rois, 0.5, 3, 2, 2, True))
    grad = torch.randn(5, 4, 3, 2, generator=g)
    torch.library.opcheck(
        torch.ops.mrseg._roi_align_backward.default,
        (grad, rois, 0.5, 3, 2, 2, 4, 9, 10, 2, True, channels_last),
    )


def test_torch_compile_forward_and_backward():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 4, 12, 12, generator=g)
    rois = random_rois(7, 2, 12, 12, 0.5, g)

    def pool(t, r):
        return roi_align(t, r, (3, 3), 0.5, 2, True).relu().sum()

    compiled = torch.compile(pool, backend="aot_eager", fullgraph=True)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = compiled(x1, rois), pool(x2, rois)
    y1.backward()
    y2.backward()
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_torch_export():
    class Pool(torch.nn.Module):
        def forward(self, feature, rois):
            return roi_align(feature, rois, (4, 4), 0.25, 2, True)

    g = torch.Generator().manual_seed(10)
    x = torch.randn(1, 8, 16, 16, generator=g)
    rois = random_rois(6, 1, 16, 16, 0.25, g)
    k = torch.export.Dim("k", min=0, max=1000)
    program = torch.export.export(Pool(), (x, rois), dynamic_shapes={"feature": None, "rois": {0: k}})
    targets = {node.target for node in program.graph.nodes if node.op == "call_function"}
    assert torch.ops.mrseg.roi_align.default in targets
    more_rois = random_rois(11, 1, 16, 16, 0.25, g)
    torch.testing.assert_close(program.module()(x, more_rois), Pool()(x, more_rois))


def test_bad_inputs_have_clear_errors():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"rois must be a \[K, 5\]"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must be a \[K, 4\]"):
        roi_align(x, [torch.zeros(1, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match=r"input must be a \[N, C, H, W\]"):
        roi_align(torch.randn(2, 8, 8), torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(x, torch.zeros(1, 5), (2, 2, 2))
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align(x, torch.tensor([[1.0, 0, 0, 4, 4]]), 2)  # only image 0 exists
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align(x, torch.tensor([[-1.0, 0, 0, 4, 4]]), 2)
    with pytest.raises(RuntimeError, match="output_size must be positive"):
        torch.ops.mrseg.roi_align(x, torch.zeros(1, 5), 1.0, 0, 2, -1, False)
    with pytest.raises(RuntimeError, match="float64, float32, float16 or bfloat16"):
        torch.ops.mrseg.roi_align(x.long(), torch.zeros(1, 5), 1.0, 2, 2, -1, False)


def test_extension_reports_build():
    assert hasattr(torch.ops.mrseg, "roi_align") and hasattr(torch.ops.mrseg, "_roi_align_backward")
    assert isinstance(mrseg_kernels.with_cuda(), bool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_cuda_matches_torchvision(channels_last, aligned, sampling_ratio):
    if not mrseg_kernels.with_cuda():
        pytest.fail(
            "a CUDA device is visible but mrseg_kernels was built without CUDA (set CUDA_HOME and rebuild)"
        )
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 20, 25, 31, generator=g).cuda()
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = random_rois(60, 2, 25, 31, 0.25, g).cuda()
    ours, ref, grad_ours, grad_ref = run_both(x, rois, (7, 7), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-5)
    assert grad_ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    # and the CUDA kernel agrees with the CPU one
    torch.testing.assert_close(ours.cpu(), roi_align(x.cpu(), rois.cpu(), 7, 0.25, sampling_ratio, aligned))


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-12), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]
)
def test_cuda_dtypes_and_edge_cases(dtype, tol):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 5, 10, 12, generator=g).to(dtype)
    rois = torch.cat(
        [random_rois(20, 2, 10, 12, 1.0, g), torch.tensor([[0, 5.0, 5, 5, 5], [1, 30, 30, 40, 45]])]
    )
    grad = torch.randn(22, 5, 3, 3, generator=g).to(dtype)
    x_ours = x.cuda().requires_grad_()
    ours = roi_align(x_ours, rois.cuda(), 3, 1.0, -1, True)
    ours.backward(grad.cuda())
    x_ref = x.double().requires_grad_()
    ref = torchvision.ops.roi_align(x_ref, rois.double(), 3, 1.0, -1, True)
    ref.backward(grad.double())
    assert ours.dtype == dtype and x_ours.grad.dtype == dtype
    torch.testing.assert_close(ours.cpu().double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x_ours.grad.cpu().double(), x_ref.grad, rtol=tol, atol=tol)
    assert roi_align(x.cuda(), torch.zeros(0, 5, device="cuda"), 3).shape == (0, 5, 3, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_gradcheck_and_compile():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 3, 6, 7, generator=g, dtype=torch.float64).cuda().requires_grad_()
    rois = random_rois(4, 1, 6, 7, 0.5, g).double().cuda()
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 0.5, 2, True), (x,))
    compiled = torch.compile(
        lambda t: roi_align(t, rois, 2, 0.5, 2, True), backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(compiled(x), roi_align(x, rois, 2, 0.5, 2, True))


def test_empty_feature_map_is_rejected():
    # the numbers in full: an extension linked against a private copy of libstdc++ (-static-libstdc++) cuts
    # the message at the first integer here, and segfaults on some machines (setup.py links it explicitly)
    with pytest.raises(RuntimeError, match=r"feature map is empty \(H, W\) = \(0, 5\) but 1 RoIs were given"):
        roi_align(torch.randn(1, 2, 0, 5), torch.tensor([[0.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(RuntimeError, match="feature map is empty"):
        torch.ops.mrseg._roi_align_backward(
            torch.ones(1, 2, 2, 2), torch.tensor([[0.0, 0, 0, 1, 1]]), 1.0, 2, 2, 1, 2, 0, 5, -1, False, False
        )
    assert roi_align(torch.randn(1, 2, 0, 5), torch.zeros(0, 5), 2).shape == (0, 2, 2, 2)
