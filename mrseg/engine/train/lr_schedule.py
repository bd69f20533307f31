"""Learning-rate schedule: linear warmup, then step or cosine decay, as a factor of the base lr per iteration.

The base lr follows the linear scaling rule of Goyal et al. 2017 with the Mask R-CNN reference point
(He et al. 2017, detectron2 1x: lr 0.02 for a total batch of 16 images):
`scaled_lr(batch) = 0.02 * batch / 16`.
"""

from __future__ import annotations

import math

REFERENCE_LR = 0.02
REFERENCE_BATCH = 16


def scaled_lr(total_batch: int) -> float:
    return REFERENCE_LR * total_batch / REFERENCE_BATCH


def lr_factor(
    iteration: int,
    *,
    total_iters: int,
    warmup_iters: int,
    warmup_factor: float = 0.001,
    schedule: str = "step",
    steps: tuple[float, ...] = (0.67, 0.89),
    gamma: float = 0.1,
    final_factor: float = 0.0,
) -> float:
    """Multiplier of the base lr at `iteration` (0-based).

    step: times `gamma` at each fraction of `total_iters` in `steps` (detectron2 1x: 60k and 80k of 90k).
    cosine: from 1 down to `final_factor` over the run. Warmup ramps linearly from `warmup_factor` to 1 over
    the first `warmup_iters` iterations, on top of the decay.
    """
    if schedule == "step":
        # rounded before the floor: 0.29 * 100 is 28.999999999999996 in floats, and the step belongs at 29
        decay = gamma ** sum(iteration >= max(1, int(round(s * total_iters, 6))) for s in steps)
    elif schedule == "cosine":
        t = min(1.0, iteration / max(1, total_iters))
        decay = final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose step or cosine")
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        decay *= warmup_factor * (1 - alpha) + alpha
    return decay
