"""Training speed: mrseg's trainer step against torchvision's `MaskRCNN` with the identical architecture, on
the CPU, at 1 and 2 threads.

The model is the one `make demo` trains: r18-fpn from scratch, trainable BatchNorm in the ResNet and the FPN,
64-channel FPN and mask head, anchors 16..256, 128 px images, 200 RPN proposals and 32 sampled RoIs per image
in training. torchvision's `MaskRCNN` is built with the same parts and settings (BackboneWithFPN on a
BatchNorm resnet18 with a BatchNorm FPN, RPNHead, TwoMLPHead, MaskRCNNHeads / MaskRCNNPredictor), the
parameter counts are checked equal, and our initial weights are copied into it through our key converter.
RoIAlign is aligned=False on both sides (torchvision's MultiScaleRoIAlign has no other flavour).

Both train on the same batches of the demo's data (examples/shapes/generate.py, flip augmentation): ours
through `mrseg.engine.train.loop.SimpleTrainer.run_step` with the optimizer `mrseg train` builds,
torchvision's as its reference loop does it (forward, sum, zero_grad, backward, clip, step) with a plain
`torch.optim.SGD`. Same lr schedule, momentum, weight decay and gradient clipping (max norm 10, as the
demo). Steps are interleaved (who goes first alternates) after a warm-up; the table gives the median
s/iteration of each and the ratio torchvision / ours (> 1: ours is faster). The losses of both runs are
printed and checked to agree (mean of the last steps within --loss-tolerance of each other).

A separate pass (`--profile`, on by default) times each stage of one step (median over steps): forward parts
(timed through forward hooks and method wrappers), backward, clipping and the optimizer step.

On a machine that other programs keep busy, wall time measures them too: `--clock cpu` times each step by
this process's CPU time instead (meaningful at 1 thread; at 2 threads it also counts the threads' waiting).
The load average is printed with every figure.

    python benchmarks/train.py                     # 1 and 2 threads, profile
    python benchmarks/train.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "shapes"))

from generate import CATEGORIES, generate_split  # noqa: E402

from mrseg.data.augment import train_transforms  # noqa: E402
from mrseg.data.coco import CocoDataset, collate  # noqa: E402
from mrseg.engine.train.loop import SimpleTrainer, clip_gradients  # noqa: E402
from mrseg.engine.train.lr_schedule import lr_factor  # noqa: E402
from mrseg.engine.train.scratch_init import init_predictors  # noqa: E402
from mrseg.engine.train.trainer import sgd  # noqa: E402
from mrseg.model.convert import mrseg_to_torchvision  # noqa: E402
from mrseg.model.zoo import build_model  # noqa: E402

SIZE = 128
ANCHORS = (16, 32, 64, 128, 256)
CHANNELS = 64
PROPOSALS = 200
ROI_BATCH = 32
CLIP = 10.0
LR = 0.02
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
now = time.perf_counter


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def build_ours(num_classes: int) -> nn.Module:
    """The demo's model (see examples/demo.py), with aligned=False RoIAlign as torchvision's."""
    model = build_model(
        "r18-fpn",
        num_classes,
        min_size=SIZE,
        max_size=SIZE,
        freeze_at=0,
        aligned=False,
        norm="bn",
        anchor_sizes=ANCHORS,
        channels=CHANNELS,
        rpn_pre_nms_top_n_train=PROPOSALS,
        rpn_post_nms_top_n_train=PROPOSALS,
        box_batch_size_per_image=ROI_BATCH,
    )
    init_predictors(model)
    return model


def build_torchvision(num_classes: int) -> nn.Module:
    """torchvision's MaskRCNN with the same architecture and settings as `build_ours`."""
    from torchvision.models import resnet18
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    backbone = BackboneWithFPN(
        resnet18(weights=None, norm_layer=nn.BatchNorm2d),
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=CHANNELS,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=nn.BatchNorm2d,
    )
    anchors = AnchorGenerator(tuple((s,) for s in ANCHORS), ((0.5, 1.0, 2.0),) * len(ANCHORS))
    return MaskRCNN(
        backbone,
        min_size=SIZE,
        max_size=SIZE,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(CHANNELS, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=PROPOSALS,
        rpn_post_nms_top_n_train=PROPOSALS,
        box_batch_size_per_image=ROI_BATCH,
        box_predictor=FastRCNNPredictor(1024, num_classes + 1),
        mask_head=MaskRCNNHeads(CHANNELS, [CHANNELS] * 4, 1),
        mask_predictor=MaskRCNNPredictor(CHANNELS, CHANNELS, num_classes + 1),
    )


def twin_models(num_classes: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """(ours, torchvision's) with the same initial weights."""
    torch.manual_seed(seed)
    ours = build_ours(num_classes)
    tv = build_torchvision(num_classes)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_tv = sum(p.numel() for p in tv.parameters())
    if n_ours != n_tv:
        raise SystemExit(f"parameter counts differ: ours {n_ours:,}, torchvision {n_tv:,}")
    tv.load_state_dict(mrseg_to_torchvision(ours.state_dict()), strict=True)
    return ours, tv


def make_batches(count: int, batch: int, seed: int, data_dir: Path) -> list:
    """`count` batches of `batch` augmented demo images (list of images, list of targets)."""
    n_images = count * batch
    generate_split(str(data_dir), "train", n_images, SIZE, seed, max_shapes=3, min_shape=32, max_shape=64)
    ds = CocoDataset(
        data_dir / "train.json", data_dir / "train", transforms=train_transforms(0.5), train=True
    )
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=g).tolist()
    return [
        collate([ds[(order[(i * batch + j) % len(order)], i * batch + j)] for j in range(batch)])
        for i in range(count)
    ]


def schedule(total: int):
    return lambda it: lr_factor(it, total_iters=total, warmup_iters=min(50, total // 5), schedule="cosine")


def ours_runner(model: nn.Module, total: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total))
    trainer = SimpleTrainer(
        model,
        [],
        optimizer,
        scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
        device=torch.device("cpu"),
        max_iter=total,
        clip_grad=CLIP,
    )
    trainer.model.train()

    def step(batch) -> float:
        trainer.run_step(batch)
        return trainer.loss

    return step, trainer


def torchvision_runner(model: nn.Module, total: int):
    """torchvision's references/detection train_one_epoch step, plus clipping."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total))
    model.train()

    def step(batch) -> float:
        images, targets = batch
        loss_dict = model(images, targets)
        losses = sum(loss for loss in loss_dict.values())
        loss_value = losses.item()
        if not math.isfinite(loss_value):
            raise SystemExit(f"torchvision: loss is {loss_value}")
        optimizer.zero_grad()
        losses.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        scheduler.step()
        return loss_value

    return step, optimizer


def timed_run(batches: list, threads: int, warmup: int, seed: int, num_classes: int) -> dict:
    torch.set_num_threads(threads)
    ours, tv = twin_models(num_classes, seed)
    total = len(batches)
    ours_step, _ = ours_runner(ours, total)
    tv_step, _ = torchvision_runner(tv, total)
    times = {"ours": [], "torchvision": []}
    losses = {"ours": [], "torchvision": []}
    steps = {"ours": ours_step, "torchvision": tv_step}
    for i, batch in enumerate(batches):
        order = ("ours", "torchvision") if i % 2 == 0 else ("torchvision", "ours")
        for name in order:
            torch.manual_seed(seed * 1000 + i)
            t0 = now()
            loss = steps[name](batch)
            dt = now() - t0
            losses[name].append(loss)
            if i >= warmup:
                times[name].append(dt)
    return {"times": times, "losses": losses}


# ---- per-stage profile ----------------------------------------------------------------------------------


class StageTimer:
    def __init__(self):
        self.current: dict[str, float] = defaultdict(float)
        self.history: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, seconds: float) -> None:
        self.current[name] += seconds

    def end_step(self) -> None:
        for k, v in self.current.items():
            self.history[k].append(v)
        self.current = defaultdict(float)

    def module(self, name: str, module: nn.Module) -> None:
        start = {}
        module.register_forward_pre_hook(lambda m, a: start.__setitem__("t", now()))
        module.register_forward_hook(lambda m, a, o: self.add(name, now() - start["t"]))

    def method(self, name: str, obj, attr: str) -> None:
        """Times obj.attr through a wrapper on the instance (the benchmark's own models only)."""
        fn = getattr(obj, attr)

        def wrapper(*args, **kwargs):
            t0 = now()
            out = fn(*args, **kwargs)
            self.add(name, now() - t0)
            return out

        setattr(obj, attr, wrapper)

    @contextlib.contextmanager
    def function(self, name: str, module, attr: str):
        fn = getattr(module, attr)

        def wrapper(*args, **kwargs):
            t0 = now()
            out = fn(*args, **kwargs)
            self.add(name, now() - t0)
            return out

        setattr(module, attr, wrapper)
        try:
            yield
        finally:
            setattr(module, attr, fn)


def instrument_ours(model: nn.Module, timer: StageTimer, stack: contextlib.ExitStack) -> None:
    import mrseg.model.roi_heads as rh

    timer.module("transform", model.transform)
    timer.module("backbone", model.backbone)
    timer.module("rpn head", model.rpn.head)
    timer.method("rpn proposals (decode, NMS)", model.rpn, "select_proposals")
    timer.method("rpn targets + loss", model.rpn, "losses")
    timer.method("roi sampling + box targets", model.roi_heads, "sample_proposals")
    timer.module("box pooler + head", model.roi_heads.box_pooler)
    timer.module("box pooler + head", model.roi_heads.box_head)
    timer.module("mask pooler + head", model.roi_heads.mask_pooler)
    timer.module("mask pooler + head", model.roi_heads.mask_head)
    stack.enter_context(timer.function("mask targets", rh, "mask_targets"))


def instrument_torchvision(model: nn.Module, timer: StageTimer, stack: contextlib.ExitStack) -> None:
    import torchvision.models.detection.roi_heads as rh

    timer.module("transform", model.transform)
    timer.module("backbone", model.backbone)
    timer.module("rpn head", model.rpn.head)
    timer.method("rpn proposals (decode, NMS)", model.rpn, "filter_proposals")
    timer.method("rpn targets + loss", model.rpn, "assign_targets_to_anchors")
    timer.method("rpn targets + loss", model.rpn, "compute_loss")
    timer.method("roi sampling + box targets", model.roi_heads, "select_training_samples")
    timer.module("box pooler + head", model.roi_heads.box_roi_pool)
    timer.module("box pooler + head", model.roi_heads.box_head)
    timer.module("mask pooler + head", model.roi_heads.mask_roi_pool)
    timer.module("mask pooler + head", model.roi_heads.mask_head)
    stack.enter_context(timer.function("mask targets", rh, "project_masks_on_boxes"))


def profile(batches: list, threads: int, warmup: int, seed: int, num_classes: int) -> dict[str, dict]:
    """Median seconds per stage of one step, for each model (the models' own code, timed piecewise)."""
    torch.set_num_threads(threads)
    ours, tv = twin_models(num_classes, seed)
    total = len(batches)
    result = {}
    for name, model in (("ours", ours), ("torchvision", tv)):
        timer = StageTimer()
        with contextlib.ExitStack() as stack:
            params = [p for p in model.parameters() if p.requires_grad]
            if name == "ours":
                instrument_ours(model, timer, stack)
                optimizer = sgd(params, lr=LR, momentum=0.9, weight_decay=1e-4)
                clip = clip_gradients
            else:
                instrument_torchvision(model, timer, stack)
                optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
                clip = torch.nn.utils.clip_grad_norm_
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total))
            model.train()
            for i, (images, targets) in enumerate(batches):
                torch.manual_seed(seed * 1000 + i)
                t0 = now()
                loss = sum(model(images, targets).values())
                timer.add("forward (all)", now() - t0)
                t = now()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                timer.add("backward", now() - t)
                t = now()
                clip(params, CLIP)
                timer.add("clip gradients", now() - t)
                t = now()
                optimizer.step()
                scheduler.step()
                timer.add("optimizer step", now() - t)
                timer.add("step (all)", now() - t0)
                if i >= warmup:
                    timer.end_step()
                else:
                    timer.current = defaultdict(float)
        result[name] = {k: statistics.median(v) for k, v in timer.history.items()}
    return result


STAGES = (
    "transform",
    "backbone",
    "rpn head",
    "rpn proposals (decode, NMS)",
    "rpn targets + loss",
    "roi sampling + box targets",
    "box pooler + head",
    "mask targets",
    "mask pooler + head",
    "forward (all)",
    "backward",
    "clip gradients",
    "optimizer step",
    "step (all)",
)


def print_profile(prof: dict[str, dict], threads: int) -> None:
    print(f"\nper-stage profile, {threads} thread(s), median ms per step")
    print(f"{'stage':34s} {'mrseg':>8s} {'torchvision':>12s} {'saved':>8s}")
    for stage in STAGES:
        a, b = prof["ours"].get(stage, 0.0) * 1e3, prof["torchvision"].get(stage, 0.0) * 1e3
        print(f"{stage:34s} {a:8.1f} {b:12.1f} {b - a:8.1f}")
    other = lambda p: p["forward (all)"] - sum(p.get(s, 0.0) for s in STAGES[:9])  # noqa: E731
    print(
        f"{'forward, rest (losses, glue)':34s} {other(prof['ours']) * 1e3:8.1f} "
        f"{other(prof['torchvision']) * 1e3:12.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts (default 1,2)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per model and thread count")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="on", choices=("on", "off"))
    p.add_argument("--profile-steps", type=int, default=15)
    p.add_argument("--loss-tolerance", type=float, default=0.2, help="relative; mean of the last 10 steps")
    p.add_argument(
        "--clock", default="wall", choices=sorted(CLOCK), help="what a step's time is (default wall)"
    )
    a = p.parse_args(argv)
    global now
    now = CLOCK[a.clock]
    thread_counts = [int(t) for t in a.threads.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        batches = make_batches(a.warmup + a.steps, a.batch, a.seed, Path(tmp))
    num_classes = len(CATEGORIES)
    ours, _ = twin_models(num_classes, a.seed)
    print(
        f"r18-fpn demo model, {sum(p.numel() for p in ours.parameters()):,} parameters each; "
        f"{len(batches)} batches of {a.batch} images at {SIZE} px; torch {torch.__version__}; "
        f"{a.clock} clock; {load()}"
    )
    failed = False
    rows = []
    for threads in thread_counts:
        run = timed_run(batches, threads, a.warmup, a.seed, num_classes)
        t_ours = statistics.median(run["times"]["ours"])
        t_tv = statistics.median(run["times"]["torchvision"])
        l_ours = statistics.fmean(run["losses"]["ours"][-10:])
        l_tv = statistics.fmean(run["losses"]["torchvision"][-10:])
        first = (run["losses"]["ours"][0], run["losses"]["torchvision"][0])
        agree = abs(l_ours - l_tv) <= a.loss_tolerance * max(l_ours, l_tv)
        failed |= not agree
        rows.append((threads, t_ours, t_tv, first, l_ours, l_tv, agree))
        print(
            f"{threads} thread(s): mrseg {t_ours:.3f} s/it, torchvision {t_tv:.3f} s/it, "
            f"ratio {t_tv / t_ours:.2f}x; loss first step {first[0]:.3f} / {first[1]:.3f}, "
            f"mean of last 10 {l_ours:.3f} / {l_tv:.3f} ({'agree' if agree else 'DIFFER'}); {load()}",
            flush=True,
        )
    if a.profile == "on":
        for threads in thread_counts:
            with tempfile.TemporaryDirectory() as tmp:
                pbatches = make_batches(a.warmup + a.profile_steps, a.batch, a.seed + 1, Path(tmp))
            print_profile(profile(pbatches, threads, a.warmup, a.seed, num_classes), threads)
            print(load())
    print("\nsummary:")
    for threads, t_ours, t_tv, _, l_ours, l_tv, agree in rows:
        print(
            f"  {threads} thread(s): {t_tv / t_ours:.2f}x (mrseg {t_ours:.3f}, torchvision {t_tv:.3f} s/it); "
            f"losses {l_ours:.3f} vs {l_tv:.3f} {'agree' if agree else 'DIFFER'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
