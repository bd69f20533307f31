"""lr_schedule: the lr factor of every iteration against torch's own schedulers (LinearLR warm-up chained
with MultiStepLR or CosineAnnealingLR) stepping an SGD of base lr 1, and the linear scaling rule."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from mrseg.engine.train.lr_schedule import REFERENCE_BATCH, REFERENCE_LR, lr_factor, scaled_lr


def torch_factors(make, iters: int) -> list[float]:
    """The lr of each of `iters` iterations of an SGD with lr 1 under the schedulers `make(optimizer)`."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.ChainedScheduler(make(opt))
    lrs = []
    for _ in range(iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def warmup(opt, warmup_iters: int, warmup_factor: float) -> list:
    if warmup_iters == 0:
        return []
    return [torch.optim.lr_scheduler.LinearLR(opt, warmup_factor, 1.0, total_iters=warmup_iters)]


def at_fraction(fraction: float, total: int) -> int:
    """The iteration at `fraction` of `total`, in exact decimal arithmetic (0.29 of 100 is 29)."""
    return math.floor(Fraction(str(fraction)) * total)


@pytest.mark.parametrize(
    ("total", "warmup_iters", "warmup_factor", "steps", "gamma"),
    [
        (90, 10, 0.001, (0.67, 0.89), 0.1),  # the defaults, scaled down from detectron2's 90k
        (1000, 100, 0.001, (0.67, 0.89), 0.1),
        (100, 0, 0.001, (0.29, 0.57), 0.5),  # fractions whose float product falls just under an integer
        (300, 50, 0.25, (0.2, 0.4, 0.8), 0.3),  # a step inside the warm-up
        (37, 7, 0.1, (0.5,), 0.1),
    ],
)
def test_step_schedule_matches_linear_warmup_chained_with_multistep(total, warmup_iters, warmup_factor, steps,
                                                                    gamma):  # fmt: skip
    milestones = [at_fraction(s, total) for s in steps]
    assert min(milestones) >= 1  # torch's MultiStepLR never applies a milestone at 0
    expected = torch_factors(
        lambda opt: [
            *warmup(opt, warmup_iters, warmup_factor),
            torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=gamma),
        ],
        total,
    )
    kw = dict(total_iters=total, warmup_iters=warmup_iters, warmup_factor=warmup_factor, steps=steps)
    got = [lr_factor(i, **kw, schedule="step", gamma=gamma) for i in range(total)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("total", "warmup_iters", "warmup_factor"), [(100, 0, 0.001), (120, 20, 0.001),
                                                                       (64, 10, 0.3)])  # fmt: skip
def test_cosine_schedule_matches_linear_warmup_chained_with_cosine_annealing(total, warmup_iters,
                                                                             warmup_factor):  # fmt: skip
    expected = torch_factors(
        lambda opt: [
            *warmup(opt, warmup_iters, warmup_factor),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
        ],
        total + 1,
    )
    kw = dict(total_iters=total, warmup_iters=warmup_iters, warmup_factor=warmup_factor, schedule="cosine")
    assert [lr_factor(i, **kw) for i in range(total + 1)] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("final_factor", [0.0, 0.05, 0.5])
def test_cosine_schedule_ends_at_its_final_factor_like_cosine_annealing_with_eta_min(final_factor):
    total = 80
    expected = torch_factors(
        lambda opt: [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=final_factor)],
        total + 1,
    )
    got = [
        lr_factor(i, total_iters=total, warmup_iters=0, schedule="cosine", final_factor=final_factor)
        for i in range(total + 1)
    ]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # past the end (a run extended on resume) the factor stays at its floor instead of rising again
    assert lr_factor(total + 30, total_iters=total, warmup_iters=0, schedule="cosine",
                     final_factor=final_factor) == pytest.approx(final_factor)  # fmt: skip


def test_a_step_at_iteration_zero_applies_from_iteration_one():
    """A fraction of a tiny run that rounds down to 0: the first iteration still trains undecayed."""
    kw = dict(total_iters=4, warmup_iters=0, steps=(0.1,), gamma=0.1)
    assert [lr_factor(i, **kw) for i in range(4)] == pytest.approx([1.0, 0.1, 0.1, 0.1])


def test_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'; choose step or cosine"):
        lr_factor(0, total_iters=10, warmup_iters=0, schedule="linear")


@pytest.mark.parametrize("batch", [1, 2, 8, 16, 64])
def test_scaled_lr_is_linear_in_the_batch_through_detectron2s_reference_point(batch):
    assert (REFERENCE_LR, REFERENCE_BATCH) == (0.02, 16)  # detectron2 1x: lr 0.02 at 16 images a batch
    assert scaled_lr(batch) == pytest.approx(0.02 * batch / 16)
    assert scaled_lr(2 * batch) == pytest.approx(2 * scaled_lr(batch))
