"""Non-finite box coordinates and bad batch indices in mrseg_kernels.roi_align (issue 13, point 2).

A NaN / inf box coordinate pools to zeros and gets no gradient; a batch index outside [0, N) (NaN, inf and
huge values included) raises a RuntimeError that names the row. The crashing cases run in a subprocess, so a
regression (a segfault) fails the test instead of killing pytest. Finite rows next to the bad ones are
compared with torchvision.ops.roi_align, which is the oracle for finite input.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

from mrseg_kernels import roi_align

NAN, INF = float("nan"), float("inf")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
BAD_BOXES = [
    [NAN, 1, 8, 8],
    [0, 1, 8, NAN],
    [INF, 1, 8, 8],
    [0, -INF, 8, 8],
    [0, 1, INF, 8],
    [-3e38, 1, 3e38, 8],  # finite, but x2 - x1 overflows float32
]
GOOD_BOXES = [[1.0, 2.0, 11.5, 9.0], [-3.0, 4.0, 6.0, 14.0]]


def _run_isolated(code):
    """Runs code in a fresh interpreter; returns (returncode, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def survives_bad_boxes():
    """Runs every bad box through forward and backward (each dtype, layout, sampling ratio and alignment) in a
    subprocess first, so that the in-process tests below only run once that cannot crash pytest."""
    code, err = _run_isolated(f"""
        import torch, mrseg_kernels
        nan, inf = float("nan"), float("inf")
        boxes = {BAD_BOXES!r}
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(2, 20, 16, 16).to(dtype).to(memory_format=fmt).requires_grad_()
                rois = torch.tensor([[1.0, *b] for b in boxes], dtype=torch.float64)
                for sr in (2, -1):
                    for aligned in (False, True):
                        mrseg_kernels.roi_align(x, rois, (5, 4), 1.0, sr, aligned).sum().backward()
        """)
    if code != 0:
        pytest.fail(f"roi_align on non-finite boxes killed a subprocess (exit {code}): {err[-2000:]}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_nan_box_does_not_crash_the_process(channels_last):
    # The reproduction from the issue: exit 139 (SIGSEGV) before the fix.
    fmt = "torch.channels_last" if channels_last else "torch.contiguous_format"
    code, err = _run_isolated(f"""
        import torch, mrseg_kernels
        x = torch.randn(1, 4, 16, 16).to(memory_format={fmt}).requires_grad_()
        for aligned in (True, False):
            for sr in (2, -1):
                rois = torch.tensor([[0., float('nan'), 1, 8, 8], [0., 0, 1, float('inf'), 8]])
                out = mrseg_kernels.roi_align(x, rois, 7, 1.0, sr, aligned)
                assert out.eq(0).all(), out
                out.sum().backward()
                assert x.grad.eq(0).all()
                x.grad = None
        print("ok")
        """)
    assert code == 0, f"exit {code}: {err[-2000:]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
@pytest.mark.parametrize("aligned", [False, True])
def test_non_finite_boxes_pool_to_zero_and_get_no_gradient(
    survives_bad_boxes, dtype, channels_last, sampling_ratio, aligned
):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 20, 16, 16, generator=g).to(dtype)  # 20 channels: the tiled path sees them too
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rows = [[0.0, *b] for b in GOOD_BOXES] + [[1.0, *b] for b in BAD_BOXES]
    rois = torch.tensor(rows, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    n_good = len(GOOD_BOXES)
    xg = x.detach().clone().requires_grad_()
    out = roi_align(xg, rois, (5, 4), 1.0, sampling_ratio, aligned)
    assert torch.equal(out[n_good:], torch.zeros_like(out[n_good:]))
    grad = torch.randn(out.shape, generator=g).to(dtype)
    out.backward(grad)
    # Image 1 is read only by the bad boxes: no gradient reaches it.
    assert torch.equal(xg.grad[1], torch.zeros_like(xg.grad[1]))
    # The finite rows are untouched by their bad neighbours: they equal torchvision on the finite rows alone.
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    x_ref = x.detach().float().contiguous().requires_grad_()
    ref = torchvision.ops.roi_align(x_ref, rois[:n_good].float(), (5, 4), 1.0, sampling_ratio, aligned)
    ref.backward(grad[:n_good].float())
    torch.testing.assert_close(out[:n_good].float(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(xg.grad[0].float(), x_ref.grad[0], atol=tol, rtol=tol)


@pytest.mark.parametrize("index", [NAN, INF, -INF, 1e19, -1e19, 2.0, -1.0, -0.5], ids=repr)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_bad_batch_index_raises(index, channels_last):
    x = torch.randn(2, 3, 8, 8)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    rois = torch.tensor([[0.0, 1, 1, 5, 5], [index, 1, 1, 5, 5]])
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] = .* is not a batch index .* holds 2 image"):
        roi_align(x, rois, 3, 1.0, 2, True)


@pytest.mark.parametrize("index", [NAN, INF, 1e19, 2.0])
def test_bad_batch_index_raises_in_backward(index):
    grad = torch.randn(1, 3, 3, 3)
    rois = torch.tensor([[index, 1, 1, 5, 5]])
    with pytest.raises(RuntimeError, match=r"is not a batch index"):
        torch.ops.mrseg._roi_align_backward(grad, rois, 1.0, 3, 3, 2, 3, 8, 8, 2, True, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_bad_rois(channels_last):
    x = torch.randn(2, 4, 16, 16, device="cuda")
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    for index in (NAN, INF, 1e19, 2.0, -1.0):
        rois = torch.tensor([[0.0, 1, 1, 5, 5], [index, 1, 1, 5, 5]], device="cuda")
        with pytest.raises(RuntimeError, match=r"rois\[1, 0\] = .* is not a batch index"):
            roi_align(x, rois, 3, 1.0, 2, True)
        grad = torch.randn(1, 4, 3, 3, device="cuda")
        with pytest.raises(RuntimeError, match=r"is not a batch index"):
            torch.ops.mrseg._roi_align_backward(
                grad, rois[1:], 1.0, 3, 3, 2, 4, 16, 16, 2, True, channels_last
            )
    rois = torch.tensor([[0.0, NAN, 1, 8, 8], [1.0, 0, 1, INF, 8], [0.0, 1, 2, 11.5, 9]], device="cuda")
    out = roi_align(x, rois, 7, 1.0, 2, True)
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    out.sum().backward()
    assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    ref = torchvision.ops.roi_align(x.detach().cpu(), rois[2:].cpu(), 7, 1.0, 2, True)
    torch.testing.assert_close(out[2:].cpu(), ref, atol=1e-5, rtol=1e-5)
