"""clip_gradients gives torch.nn.utils.clip_grad_norm_'s gradients and norm, whether or not it clips."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg.engine.train.loop import clip_gradients

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(seed: int, scale: float) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 3, 7, 7), (64,), (1024, 3136), (4,), (5, 5)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g)
    params.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient
    return params


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 30.0])
@pytest.mark.parametrize("max_norm", [0.5, 10.0])
def test_same_gradients_and_norm_as_clip_grad_norm(scale, max_norm):
    ours, ref = _params(0, scale), _params(0, scale)
    norm = clip_gradients(ours, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    assert float(norm) == float(ref_norm)
    for a, b in zip(ours, ref, strict=True):
        if b.grad is None:
            assert a.grad is None
        else:
            assert torch.equal(a.grad, b.grad)


def test_norm_at_the_limit_and_non_finite_gradients_as_torch():
    ours, ref = _params(1, 1.0), _params(1, 1.0)
    exact = float(torch.nn.utils.get_total_norm([p.grad for p in ref if p.grad is not None]))
    clip_gradients(ours, exact)  # a factor just below 1: clip_grad_norm_ scales
    torch.nn.utils.clip_grad_norm_(ref, exact)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, ref, strict=True) if b.grad is not None)

    ours, ref = _params(2, 1.0), _params(2, 1.0)
    ours[1].grad[0] = ref[1].grad[0] = float("nan")
    assert math.isnan(float(clip_gradients(ours, 1.0)))
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    for a, b in zip(ours, ref, strict=True):
        if b.grad is not None:
            assert torch.equal(a.grad.isnan(), b.grad.isnan())
            assert torch.equal(a.grad.nan_to_num(), b.grad.nan_to_num())
