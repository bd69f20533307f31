"""Times mrseg_kernels.roi_align against torchvision.ops.roi_align in the same run, on an FPN workload.

Workload: one 800x1088 image, 4 FPN levels (strides 4, 8, 16, 32) of 256 channels; 1000 RoIs pooled to 7x7
(box head) and 100 RoIs pooled to 14x14 (mask head), sampling_ratio=2, aligned=True. RoIs are spread over the
levels by the FPN rule (level = floor(4 + log2(sqrt(wh) / 224)), clamped to 2..5) and pooled with one call
per level.

    python benchmarks/roi_align.py [--device cuda] [--channels-last] [--repeats 10] [--threads N]

Prints the median time of each variant and the ratio torchvision / ours (> 1: ours is faster). On a CPU that
other jobs are using, threads get descheduled mid-call and multi-threaded times swing; `--threads 1` shows
the per-thread speed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torchvision

import mrseg_kernels

IMAGE_H, IMAGE_W = 800, 1088
STRIDES = (4, 8, 16, 32)
CHANNELS = 256


def fpn_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 4] xyxy boxes inside the image, sizes log-uniform in 16..640 px, aspect ratios 0.5..2."""
    size = torch.exp(torch.empty(n).uniform_(math.log(16), math.log(640), generator=generator))
    aspect = torch.exp(torch.empty(n).uniform_(math.log(0.5), math.log(2.0), generator=generator))
    w = (size * aspect.sqrt()).clamp(max=IMAGE_W - 1)
    h = (size / aspect.sqrt()).clamp(max=IMAGE_H - 1)
    x1 = torch.rand(n, generator=generator) * (IMAGE_W - w)
    y1 = torch.rand(n, generator=generator) * (IMAGE_H - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def per_level_rois(boxes: torch.Tensor) -> list[torch.Tensor]:
    """FPN level assignment (Lin et al. 2017, eq. 1): one [K_l, 5] rois tensor per level, batch index 0."""
    scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    level = torch.floor(4 + torch.log2(scale / 224 + 1e-8)).clamp(2, 5).long() - 2
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    return [rois[level == i] for i in range(len(STRIDES))]


def make_case(device: str, channels_last: bool, generator: torch.Generator):
    features = []
    for s in STRIDES:
        f = torch.randn(1, CHANNELS, IMAGE_H // s, IMAGE_W // s, generator=generator)
        if channels_last:
            f = f.to(memory_format=torch.channels_last)
        features.append(f.to(device))
    heads = []
    for n, size in ((1000, 7), (100, 14)):
        heads.append(([r.to(device) for r in per_level_rois(fpn_boxes(n, generator))], size))
    return features, heads


def pool_all(fn, features, heads, backward: bool):
    for rois_per_level, size in heads:
        for feat, rois, stride in zip(features, rois_per_level, STRIDES, strict=True):
            if len(rois) == 0:
                continue
            out = fn(feat, rois, (size, size), 1.0 / stride, 2, True)
            if backward:
                out.backward(torch.ones_like(out))


def median_time(fn, features, heads, backward, device, repeats):
    if backward:
        features = [f.detach().requires_grad_() for f in features]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    pool_all(fn, features, heads, backward)  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        pool_all(fn, features, heads, backward)
        sync()
        times.append(time.perf_counter() - t0)
        if backward:
            for f in features:
                f.grad = None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--channels-last", action="store_true", help="feature maps in channels_last memory")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="CPU threads for both (torch.set_num_threads)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    if args.device.startswith("cuda") and not mrseg_kernels.with_cuda():
        raise SystemExit("--device cuda: mrseg_kernels was built without CUDA; rebuild with CUDA_HOME set")

    generator = torch.Generator().manual_seed(0)
    features, heads = make_case(args.device, args.channels_last, generator)
    counts = [[len(r) for r in rois] for rois, _ in heads]
    print(
        f"device={args.device} threads={torch.get_num_threads()} channels_last={args.channels_last} "
        f"RoIs per level (P2..P5): 7x7 {counts[0]}, 14x14 {counts[1]}"
    )
    print(f"{'pass':<18}{'torchvision ms':>16}{'mrseg ms':>12}{'tv / mrseg':>12}")
    for name, backward in (("forward", False), ("forward+backward", True)):
        tv = median_time(torchvision.ops.roi_align, features, heads, backward, args.device, args.repeats)
        ours = median_time(mrseg_kernels.roi_align, features, heads, backward, args.device, args.repeats)
        print(f"{name:<18}{tv * 1e3:>16.2f}{ours * 1e3:>12.2f}{tv / ours:>11.2f}x")


if __name__ == "__main__":
    main()
