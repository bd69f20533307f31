"""The training loop behind `mrseg train`: `train(TrainConfig(...)) -> TrainResult`.

SGD with momentum and weight decay; linear warmup then step or cosine decay; the base lr follows the linear
scaling rule from the Mask R-CNN reference (lr 0.02 for a total batch of 16, see `mrseg.engine.lr_schedule`).
AMP (autocast + GradScaler) on CUDA only. Frozen BatchNorm comes with the model. Iteration-based: `epochs` is
turned into iterations of `batch` images (the total over all processes).

Distributed: under `torchrun --nproc-per-node N -m mrseg train ...` every process trains on its shard of each
batch (DDP; nccl on CUDA, gloo on CPU); only rank 0 writes files and evaluates.

Output folder: last.pt (every `checkpoint_every` iterations, at the end, and on SIGINT/SIGTERM), best.pt (the
best validation mask AP), metrics.jsonl, config.json. `resume` restores model, optimizer, scheduler, scaler,
iteration, data order and RNG states, so the resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mrseg.data.augment import train_transforms
from mrseg.data.coco import CocoDataset, collate
from mrseg.engine import distributed
from mrseg.engine.batch_sampler import ResumableBatchSampler
from mrseg.engine.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from mrseg.engine.lr_schedule import lr_factor, scaled_lr
from mrseg.engine.metrics import MetricsLog, memory_mb
from mrseg.engine.scratch_init import calibrate_frozen_bn, init_predictors
from mrseg.engine.validation import validate
from mrseg.model.backbone import NORMS
from mrseg.model.checkpoint_format import make_checkpoint, model_shape
from mrseg.model.zoo import ARCHS, DEFAULT_ANCHOR_SIZES, build_model, load_pretrained

logger = logging.getLogger("mrseg.train")

DEFAULT_OUT = Path("runs") / "train" / "exp"
LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class TrainError(ValueError):
    """A training run that cannot start or go on; the message says what is wrong and what to do."""


@dataclass
class TrainConfig:
    """Everything a run depends on (saved as config.json and in every checkpoint).

    batch: images per iteration over all processes; lr: None -> 0.02 * batch / 16. epochs / iters: give one
    (default 12 epochs). min_size: short side(s) of the model's input transform; with several, one is drawn
    per image in training (multi-scale) and the last is used at test time. roi_batch / rpn_train_proposals:
    RoIs sampled per image for the box head and proposals kept per image in training (the paper: 512 / 2000);
    smaller is faster on small images. eval_every / checkpoint_every: in iterations (default once per epoch).
    weights: "imagenet", a zoo name, a checkpoint/state-dict path, or "none" (from scratch: every stage trains
    and the frozen BN statistics are set from the data, see mrseg.engine.scratch_init).
    norm: the backbone + FPN normalisation (frozen-bn, bn, gn; see mrseg.model.zoo.build_model); None = "bn"
    with weights "none" (frozen BN would leave a from-scratch network un-normalised), else the arch's own
    (frozen BN; what pretrained weights were made for). anchor_sizes: 5 anchor sizes for P2..P6 (None:
    32..512; smaller for small images). channels: FPN and mask-head width (256; 128 is ~2x faster for small
    models from scratch). All three are recorded in the checkpoints, so load_model rebuilds the same model.
    """

    coco: str
    images: str
    val_coco: str | None = None
    val_images: str | None = None
    arch: str = "r50-fpn"
    weights: str = "imagenet"
    epochs: float | None = None
    iters: int | None = None
    batch: int = 8
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    steps: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad: float | None = None
    amp: bool = True
    device: str = "auto"
    workers: int = 4
    out: str | None = None
    exist_ok: bool = False
    resume: str | None = None
    min_size: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    flip: float = 0.5
    freeze_at: int | None = None
    roi_batch: int = 512
    rpn_train_proposals: int = 2000
    log_every: int = 20
    eval_every: int | None = None
    checkpoint_every: int | None = None
    seed: int = 0
    quiet: bool = False
    norm: str | None = None
    anchor_sizes: tuple[int, ...] | None = None
    channels: int = 256

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**values)


@dataclass
class TrainResult:
    out_dir: Path
    iteration: int
    total_iters: int
    interrupted: bool = False
    best_ap: float | None = None
    last_eval: dict = field(default_factory=dict)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {name}: CUDA is not available here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def next_run_dir(base: Path = DEFAULT_OUT, exist_ok: bool = False) -> Path:
    """runs/train/exp, then exp2, exp3, ... (the base itself with exist_ok)."""
    if exist_ok or not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")


def latest_run_dir(base: Path = DEFAULT_OUT) -> Path | None:
    pattern = re.compile(re.escape(base.name) + r"(\d*)")
    runs = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and (p / "last.pt").is_file():
                runs.append((int(m.group(1) or 1), p))
    return max(runs)[1] if runs else None


def resume_path(resume: str, out: str | None) -> Path:
    """`--resume PATH`, or with no path ("auto"): OUT/last.pt, else the latest runs/train/exp*/last.pt."""
    if resume != "auto":
        p = Path(resume)
        return p / "last.pt" if p.is_dir() else p
    if out is not None:
        return Path(out) / "last.pt"
    run = latest_run_dir()
    if run is None:
        raise TrainError(
            f"--resume: no earlier run with a last.pt under {DEFAULT_OUT.parent}/; pass its path"
        )
    return run / "last.pt"


def resume_config(path: str | os.PathLike, **overrides) -> TrainConfig:
    """The config saved in a checkpoint, with `overrides` applied (e.g. more iters, another device)."""
    saved = load_checkpoint(path)["config"]
    cfg = TrainConfig.from_json({**saved, **overrides})
    cfg.resume = str(path)
    return cfg


def resolved_norm(cfg: TrainConfig) -> str | None:
    """The norm the model is built with: cfg.norm, else bn from scratch, else None (the arch's own)."""
    if cfg.norm is not None:
        return cfg.norm
    return "bn" if cfg.weights == "none" else None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _check_config(cfg: TrainConfig) -> None:
    if cfg.arch not in ARCHS:
        raise TrainError(f"--arch {cfg.arch!r} is not one of {', '.join(ARCHS)}")
    if cfg.epochs is not None and cfg.iters is not None:
        raise TrainError("give --epochs or --iters, not both")
    if (cfg.val_coco is None) != (cfg.val_images is None):
        raise TrainError("--val-coco and --val-images go together; give both or neither")
    if cfg.batch < 1 or cfg.log_every < 1:
        raise TrainError("--batch and the log interval must be >= 1")
    if cfg.schedule not in ("step", "cosine"):
        raise TrainError(f"--schedule {cfg.schedule!r}: choose step or cosine")
    if cfg.norm is not None and cfg.norm not in NORMS:
        raise TrainError(f"--norm {cfg.norm!r}: choose one of {', '.join(NORMS)}")
    if cfg.anchor_sizes is not None and (len(cfg.anchor_sizes) != 5 or min(cfg.anchor_sizes) < 1):
        raise TrainError(
            f"--anchor-sizes {','.join(map(str, cfg.anchor_sizes))}: give 5 sizes in pixels (P2..P6), "
            "e.g. 16,32,64,128,256"
        )
    if cfg.channels < 32 or cfg.channels % 32:
        raise TrainError(f"--channels {cfg.channels}: give a multiple of 32 (e.g. 128 or 256)")


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked after each iteration (then last.pt is saved and it stops)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Reporter:
    """Progress bar with ETA on a terminal, plain log lines otherwise; silent on ranks > 0 or when quiet."""

    def __init__(self, enabled: bool, total: int, start: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = enabled
        self.console = Console(stderr=True)
        self.bar = None
        if enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, markup=False)

    def advance(self, iteration: int, info: str | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=iteration, **({"info": info} if info is not None else {}))

    def log_line(self, line: str) -> None:
        if self.bar is None:
            self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Runs (or resumes) a training run; see the module docstring. Returns where it wrote and how far it got.

    on_step(iteration) is called after each optimizer step (before checkpointing), e.g. for a caller's own
    logging or to stop early by raising SIGINT/SIGTERM.
    """
    _check_config(cfg)
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = distributed.init_distributed(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        return _train(cfg, device, dist, on_step)
    finally:
        distributed.cleanup()


def _train(
    cfg: TrainConfig, device: torch.device, dist: distributed.DistInfo, on_step: Callable[[int], None] | None
) -> TrainResult:
    ckpt = None
    if cfg.resume:
        path = resume_path(cfg.resume, cfg.out)
        ckpt = load_checkpoint(path)
        out_dir = Path(cfg.out) if cfg.out else path.parent
    else:
        out_dir = Path(cfg.out) if cfg.out else next_run_dir(DEFAULT_OUT, cfg.exist_ok)
        if cfg.out and (out_dir / "last.pt").exists() and not cfg.exist_ok:
            raise TrainError(
                f"--out {out_dir} already holds a training run; pass --resume to continue it, "
                "--exist-ok to overwrite it, or choose another --out"
            )
    if cfg.batch % dist.world_size:
        raise TrainError(
            f"--batch {cfg.batch} must be a multiple of the number of processes ({dist.world_size})"
        )
    per_rank_batch = cfg.batch // dist.world_size
    amp = cfg.amp and device.type == "cuda"

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_set = CocoDataset(cfg.coco, cfg.images, transforms=train_transforms(cfg.flip), train=True)
    val_set = CocoDataset(cfg.val_coco, cfg.val_images, train=False) if cfg.val_coco else None
    classes = train_set.classes
    if val_set is not None and [c["id"] for c in val_set.classes] != [c["id"] for c in classes]:
        raise TrainError(f"{cfg.val_coco}: its categories differ from {cfg.coco}'s; both need the same ids")
    if ckpt is not None and ckpt.get("classes") != classes:
        raise TrainError(
            f"--resume: the checkpoint's classes differ from {cfg.coco}'s; resume with the same data"
        )

    iters_per_epoch = math.ceil(len(train_set) / cfg.batch)
    total_iters = cfg.iters if cfg.iters is not None else max(1, round((cfg.epochs or 12) * iters_per_epoch))
    eval_every = cfg.eval_every or iters_per_epoch
    checkpoint_every = cfg.checkpoint_every or eval_every
    base_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.batch)
    warmup = min(cfg.warmup_iters, total_iters // 5)

    from_scratch = cfg.weights == "none" and ckpt is None
    freeze_at = cfg.freeze_at if cfg.freeze_at is not None else (0 if cfg.weights == "none" else 2)
    # Fine-tuning an mrseg checkpoint: its norm / anchors / width unless this run says otherwise.
    src = model_shape(cfg.weights) if ckpt is None else {}
    norm = cfg.norm if cfg.norm is not None else src.get("norm", resolved_norm(cfg))
    anchor_sizes = tuple(cfg.anchor_sizes or src.get("anchor_sizes") or DEFAULT_ANCHOR_SIZES)
    if cfg.channels == 256 and src.get("channels"):
        cfg.channels = int(src["channels"])
    model = build_model(
        cfg.arch,
        len(classes),
        min_size=tuple(cfg.min_size),
        max_size=cfg.max_size,
        freeze_at=freeze_at,
        norm=norm,
        anchor_sizes=anchor_sizes,
        channels=cfg.channels,
        rpn_pre_nms_top_n_train=cfg.rpn_train_proposals,
        rpn_post_nms_top_n_train=cfg.rpn_train_proposals,
        box_batch_size_per_image=cfg.roi_batch,
    )
    reporter = _Reporter(dist.is_main and not cfg.quiet, total_iters, int(ckpt["iteration"]) if ckpt else 0)
    if ckpt is None:
        try:
            reinitialised = load_pretrained(model, cfg.weights, cfg.arch)
        except ValueError as e:
            raise TrainError(str(e)) from e
        if reinitialised:
            reporter.say(
                f"weights {cfg.weights}: re-initialised {len(reinitialised)} class-specific tensors "
                f"for {len(classes)} classes ({', '.join(reinitialised[:4])}, ...)"
            )
        if cfg.weights in ("none", "imagenet") or reinitialised:
            init_predictors(model, None if cfg.weights in ("none", "imagenet") else reinitialised)
        if from_scratch:
            images = [train_set[i][0] for i in range(min(8, len(train_set)))]
            n = calibrate_frozen_bn(model, images)
            if n:
                reporter.say(
                    f"weights none: set the statistics of {n} frozen BN layers from {len(images)} images"
                )
    model.to(device)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(
            it,
            total_iters=total_iters,
            warmup_iters=warmup,
            warmup_factor=cfg.warmup_factor,
            schedule=cfg.schedule,
            steps=tuple(cfg.steps),
            gamma=cfg.gamma,
        ),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    start_iter, best_ap = 0, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_iter = int(ckpt["iteration"])
        best_ap = ckpt.get("best_ap")
        reporter.say(
            f"resumed from {resume_path(cfg.resume, cfg.out)}: model, optimizer, lr scheduler"
            f"{', AMP scaler' if amp and ckpt.get('scaler') else ''}, data order and RNG state at "
            f"iteration {start_iter}/{total_iters} (lr {scheduler.get_last_lr()[0]:.5g}, "
            f"best mask AP {best_ap if best_ap is not None else '-'})"
        )
        if start_iter >= total_iters:
            reporter.say(
                f"the run is already complete ({start_iter} iterations); raise --iters/--epochs to go on"
            )

    resolved = {
        **cfg.to_json(),
        "out": str(out_dir),
        "total_iters": total_iters,
        "base_lr": base_lr,
        "warmup_iters_effective": warmup,
        "world_size": dist.world_size,
        "classes": classes,
        "iters_per_epoch": iters_per_epoch,
        "eval_every": eval_every,
        "checkpoint_every": checkpoint_every,
    }
    metrics = None
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".config.json.tmp"
        tmp.write_text(json.dumps(resolved, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_dir / "config.json")
        metrics = MetricsLog(out_dir / "metrics.jsonl", resume_iter=start_iter if ckpt else None)
        reporter.say(
            f"training {cfg.arch} on {len(train_set)} images ({len(classes)} classes) for {total_iters} "
            f"iterations of {cfg.batch} images on {device}"
            f"{f' ({norm} norm)' if norm else ''}"
            f"{f' x {dist.world_size} processes' if dist.enabled else ''}; lr {base_lr:.5g}; "
            f"AMP {'on' if amp else 'off'}; writing to {out_dir}"
        )

    sampler = ResumableBatchSampler(
        len(train_set),
        per_rank_batch,
        total_iters=total_iters,
        start_iter=start_iter,
        seed=cfg.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed),
        persistent_workers=False,
        pin_memory=device.type == "cuda",
        worker_init_fn=_ignore_sigint,
    )
    train_model: nn.Module = model
    if dist.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )

    def checkpoint(iteration: int, with_state: bool = True) -> dict:
        ckpt_out = make_checkpoint(
            model,
            arch=cfg.arch,
            classes=classes,
            min_size=cfg.min_size[-1],
            max_size=cfg.max_size,
            norm=norm,
            anchor_sizes=anchor_sizes,
            channels=cfg.channels,
            iteration=iteration,
            total_iters=total_iters,
            best_ap=best_ap,
            config=cfg.to_json(),
        )
        if with_state:
            ckpt_out.update(
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                rng=rank_rng[0],
                rng_per_rank=rank_rng,
            )
        return ckpt_out

    if ckpt is not None:
        states = ckpt.get("rng_per_rank") or [ckpt["rng"]]
        if len(states) == dist.world_size:
            set_rng_state(states[dist.rank])
        else:
            torch.manual_seed(cfg.seed + start_iter * 7919 + dist.rank)
            reporter.say(
                f"resume: the run had {len(states)} processes, now {dist.world_size}; the RNG is reseeded "
                "(the data order is kept, but the result will not be bit-identical)"
            )

    last_eval: dict = {}
    iteration = start_iter
    sums: dict[str, float] = {}
    count, t_log = 0, time.perf_counter()
    model.train()
    with _StopSignal() as stop:
        try:
            for images, targets in loader:
                images = [img.to(device, non_blocking=True) for img in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    losses = train_model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise TrainError(
                        f"the loss became {loss.item()} at iteration {iteration + 1} "
                        f"({', '.join(f'{k} {v.item():.4g}' for k, v in losses.items())}); lower --lr, add "
                        "--clip-grad 10, or lengthen the warmup"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                iteration += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                count += 1

                info = None
                if iteration % cfg.log_every == 0 or iteration == total_iters:
                    means = distributed.all_reduce_mean({k: v / count for k, v in sums.items()}, device)
                    elapsed = time.perf_counter() - t_log
                    record = {
                        "type": "train",
                        "iter": iteration,
                        "epoch": round(sampler.epoch_of(iteration), 4),
                        "lr": lr,
                        **{k: round(v, 6) for k, v in means.items()},
                        "sec_per_iter": round(elapsed / count, 4),
                        "images_per_sec": round(count * cfg.batch / max(elapsed, 1e-9), 3),
                        "memory_mb": round(memory_mb(device), 1),
                    }
                    info = f"loss {means['loss']:.3f} lr {lr:.4g}"
                    reporter.log_line(
                        f"iter {iteration}/{total_iters} {info} "
                        f"{record['sec_per_iter']:.2f} s/it {record['images_per_sec']:.1f} img/s"
                    )
                    if metrics:
                        metrics.write(record)
                    sums, count, t_log = {}, 0, time.perf_counter()
                reporter.advance(iteration, info)

                if val_set is not None and (iteration % eval_every == 0 or iteration == total_iters):
                    if dist.is_main:
                        last_eval = validate(model, val_set, device)
                        ap = last_eval["segm"]["AP"]
                        metrics.write({"type": "eval", "iter": iteration, **last_eval})
                        reporter.say(
                            f"eval at iter {iteration}: mask AP {ap:.4f}, box AP "
                            f"{last_eval['bbox']['AP']:.4f}"
                        )
                        if best_ap is None or ap > best_ap:
                            best_ap = ap
                            save_atomic(checkpoint(iteration, with_state=False), out_dir / "best.pt")
                    distributed.barrier()
                    t_log = time.perf_counter()

                if on_step is not None:
                    on_step(iteration)
                stopping = distributed.any_rank(stop.signum is not None, device)
                if iteration % checkpoint_every == 0 or iteration == total_iters or stopping:
                    rank_rng = _gather_rng(dist)
                    if dist.is_main:
                        save_atomic(checkpoint(iteration), out_dir / "last.pt")
                if stopping:
                    reporter.say(
                        f"stopped by a signal at iteration {iteration}/{total_iters}; {out_dir / 'last.pt'}"
                        " saved: continue with --resume"
                    )
                    return TrainResult(out_dir, iteration, total_iters, True, best_ap, last_eval)
        finally:
            reporter.close()
            if metrics:
                metrics.close()
    return TrainResult(out_dir, iteration, total_iters, False, best_ap, last_eval)


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes the step and saves last.pt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _gather_rng(dist: distributed.DistInfo) -> list[dict]:
    """Every rank's RNG states (for an exact resume), gathered on all ranks."""
    state = rng_state()
    if not dist.enabled:
        return [state]
    gathered: list = [None] * dist.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered
