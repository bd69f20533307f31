"""How fast could mrseg's training step be against torchvision's? The dense-op floor of benchmarks/train.py.

Profiles (torch.profiler, self CPU time per op) the demo model's training step, ours and torchvision's, built
and fed exactly as `benchmarks/train.py` does, steps interleaved so that other load falls on both. Ops are put
in five dense categories that both steps run on identical shapes (convolutions and their backward, BatchNorm,
ReLU, Linear / matrix products, max pooling) and "other" (RoIAlign, NMS, targets, losses, optimizer,
clipping, copies). The shared floor is the sum over the dense categories of the smaller of the two; a ratio R
over torchvision needs our whole step under torchvision's / R, so the room left for our "other" work is
torchvision's / R minus the floor. The profiler's per-op overhead is in every figure, on both sides.

    python benchmarks/train_floor.py [--threads 1] [--steps 12] [--ratio 1.3]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from train import CATEGORIES, make_batches, ours_runner, torchvision_runner, twin_models

DENSE = {
    "conv": ("convolution", "conv2d", "mkldnn_conv", "conv_transpose", "slow_conv"),
    "batchnorm": ("batch_norm",),
    "relu": ("relu", "threshold_backward", "clamp_min"),
    "linear": ("addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm"),
    "maxpool": ("max_pool",),
}


def category(op: str) -> str:
    return next((name for name, keys in DENSE.items() if any(k in op for k in keys)), "other")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--ratio", type=float, default=1.3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        batches = make_batches(a.warmup + a.steps, 4, 0, Path(tmp))
    ours, tv = twin_models(len(CATEGORIES), 0)
    total = a.warmup + a.steps
    steps = {"mrseg": ours_runner(ours, total)[0], "torchvision": torchvision_runner(tv, total)[0]}
    for step in steps.values():
        for batch in batches[: a.warmup]:
            torch.manual_seed(1)
            step(batch)
    per_category = {name: defaultdict(float) for name in steps}
    for i, batch in enumerate(batches[a.warmup :]):
        for name in ("mrseg", "torchvision")[:: 1 if i % 2 == 0 else -1]:
            torch.manual_seed(100 + i)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[name](batch)
            for event in prof.key_averages():
                per_category[name][category(event.key)] += event.self_cpu_time_total / 1e3 / a.steps
    ours_ms, tv_ms = per_category["mrseg"], per_category["torchvision"]
    print(f"{a.threads} thread(s), {a.steps} steps, ms per step (self CPU under the profiler):")
    print(f"  {'':10s} {'mrseg':>8s} {'torchvision':>12s}")
    for name in [*DENSE, "other"]:
        print(f"  {name:10s} {ours_ms[name]:8.1f} {tv_ms[name]:12.1f}")
    total_ours, total_tv = sum(ours_ms.values()), sum(tv_ms.values())
    floor = sum(min(ours_ms[c], tv_ms[c]) for c in DENSE)
    target = total_tv / a.ratio
    print(f"  {'step':10s} {total_ours:8.1f} {total_tv:12.1f}  (ratio {total_tv / total_ours:.2f}x)")
    print(
        f"shared dense floor {floor:.1f} ms; {a.ratio}x needs a step <= {target:.1f} ms, leaving "
        f"{target - floor:.1f} ms for everything else (ours now: {ours_ms['other']:.1f} ms)"
    )


if __name__ == "__main__":
    main()
