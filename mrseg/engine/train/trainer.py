"""The training loop behind `mrseg train`: `train(TrainConfig(...)) -> TrainResult`.

SGD with momentum and weight decay, the lr schedule of `engine.train.lr_schedule`, AMP on CUDA only.
Iteration-based: `epochs` is turned into iterations of `batch` images (the total over all processes). Under
`torchrun --nproc-per-node N -m mrseg train ...` every process trains on its shard of each batch (DDP; nccl on
CUDA, gloo on CPU); only rank 0 writes files and evaluates. This module resolves the run (output folder,
iterations, model, optimizer, data) from a TrainConfig, which it never changes, and runs `loop.SimpleTrainer`
with the hooks of `engine.train.hooks`.

Output folder: last.pt (every `checkpoint_every` iterations, at the end, and on SIGINT/SIGTERM), best.pt (the
best validation mask AP; keypoint AP for a keypoint arch, box AP for a box-only one), metrics.jsonl,
config.json. `resume` restores model, optimizer, scheduler, scaler, iteration, data order and RNG states, so
the resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mrseg.data.augment import train_transforms
from mrseg.data.coco import CocoDataset, collate
from mrseg.engine.device import resolve_device
from mrseg.engine.distributed import Rank, join
from mrseg.engine.progress import ProgressBar
from mrseg.engine.run_dirs import next_run_dir, numbered_dirs
from mrseg.engine.train.batch_sampler import ResumableBatchSampler
from mrseg.engine.train.checkpoint import load_checkpoint
from mrseg.engine.train.hooks import (
    MetricsWriter,
    PeriodicCheckpoint,
    PeriodicEval,
    RngState,
    StepCallback,
    StopOnSignal,
)
from mrseg.engine.train.loop import SimpleTrainer, TrainError
from mrseg.engine.train.lr_schedule import lr_factor, scaled_lr
from mrseg.engine.train.metrics import MetricsLog
from mrseg.engine.train.resources import pick_threads, pick_workers
from mrseg.engine.train.scratch_init import calibrate_frozen_bn, init_predictors
from mrseg.engine.train.validation import OKS_KEYPOINTS, validation_types
from mrseg.model.backbone import NORMS
from mrseg.model.checkpoint_format import make_checkpoint, model_shape
from mrseg.model.zoo import ARCH_NAMES, DEFAULT_ANCHOR_SIZES, build_model, load_pretrained, split_arch
from mrseg.outputs.atomic import atomic_write_text

logger = logging.getLogger("mrseg.train")

DEFAULT_OUT = Path("runs") / "train" / "exp"


@dataclass
class TrainConfig:
    """Everything a run depends on (saved as config.json and in every checkpoint).

    batch: images per iteration over all processes; lr: None -> 0.02 * batch / 16. epochs / iters: give one
    (default 12 epochs). min_size: short side(s) of the model's input transform; with several, one is drawn
    per image in training (multi-scale) and the last is used at test time. roi_batch / rpn_train_proposals:
    RoIs sampled per image for the box head and proposals kept per image in training (the paper: 512 / 2000);
    smaller is faster on small images. eval_every / checkpoint_every: in iterations (default once per epoch).
    weights: "imagenet", a zoo name, a checkpoint/state-dict path, or "none" (from scratch: every stage trains
    and the frozen BN statistics are set from the data, see mrseg.engine.train.scratch_init).
    norm: the backbone + FPN normalisation (frozen-bn, bn, gn; see mrseg.model.zoo.build_model); None = "bn"
    with weights "none" (frozen BN would leave a from-scratch network un-normalised), else the arch's own
    (frozen BN; what pretrained weights were made for). anchor_sizes: 5 anchor sizes for P2..P6 (None:
    32..512; smaller for small images). channels: FPN and mask-head width (256; 128 is ~2x faster for small
    models from scratch). All three are recorded in the checkpoints, so load_model rebuilds the same model.
    workers / threads: data-loading processes and torch CPU threads per process; None picks them
    (mrseg.engine.train.resources.pick_workers / pick_threads) and the run says what it picked.
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
    workers: int | None = None
    threads: int | None = None
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


def resume_path(resume: str, out: str | None) -> Path:
    """`--resume PATH`, or with no path ("auto"): OUT/last.pt, else the latest runs/train/exp*/last.pt."""
    if resume != "auto":
        p = Path(resume)
        return p / "last.pt" if p.is_dir() else p
    if out is not None:
        return Path(out) / "last.pt"
    runs = [p / "last.pt" for p in numbered_dirs(DEFAULT_OUT) if (p / "last.pt").is_file()]
    if not runs:
        raise TrainError(
            f"--resume: no earlier run with a last.pt under {DEFAULT_OUT.parent}/; pass its path"
        )
    return runs[-1]


def resume_config(path: str | os.PathLike, **overrides) -> TrainConfig:
    """The config saved in a checkpoint, with `overrides` applied (e.g. more iters, another device)."""
    saved = load_checkpoint(path)["config"]
    return TrainConfig.from_json({**saved, **overrides, "resume": str(path)})


def _check_config(cfg: TrainConfig) -> None:
    if cfg.arch not in ARCH_NAMES:
        raise TrainError(f"--arch {cfg.arch!r} is not one of {', '.join(ARCH_NAMES)}")
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


def train(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Runs (or resumes) a training run; see the module docstring. Returns where it wrote and how far it got.
    `cfg` is not changed (the resolved config is saved as OUT/config.json).

    on_step(iteration) is called after each optimizer step (before checkpointing), e.g. for a caller's own
    logging or to stop early by raising SIGINT/SIGTERM.
    """
    _check_config(cfg)
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank = join("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads_before = torch.get_num_threads()
    try:
        result = _train(cfg, device, rank, on_step)
        # rank 0 is still writing last.pt when the others finish: leave together, so that no process tears
        # the group down (and exits) while another still holds its connections (a rare gloo abort at exit)
        rank.barrier()
        return result
    finally:
        torch.set_num_threads(threads_before)
        rank.close()


def _open_run(cfg: TrainConfig) -> tuple[Path, dict | None]:
    """(output folder, the checkpoint to resume from or None)."""
    if cfg.resume:
        path = resume_path(cfg.resume, cfg.out)
        return (Path(cfg.out) if cfg.out else path.parent), load_checkpoint(path)
    out_dir = Path(cfg.out) if cfg.out else next_run_dir(DEFAULT_OUT, cfg.exist_ok)
    if cfg.out and (out_dir / "last.pt").exists() and not cfg.exist_ok:
        raise TrainError(
            f"--out {out_dir} already holds a training run; pass --resume to continue it, "
            "--exist-ok to overwrite it, or choose another --out"
        )
    return out_dir, None


def _model_shape(cfg: TrainConfig, ckpt: dict | None) -> tuple[TrainConfig, dict]:
    """(cfg with its channels resolved, build_model's norm / anchor_sizes / channels). Fine-tuning an mrseg
    checkpoint keeps its norm, anchors and width unless this run says otherwise."""
    src = model_shape(cfg.weights) if ckpt is None else {}
    if cfg.channels == 256 and src.get("channels"):
        cfg = dataclasses.replace(cfg, channels=int(src["channels"]))
    norm = cfg.norm if cfg.norm is not None else src.get("norm", "bn" if cfg.weights == "none" else None)
    return cfg, {
        "norm": norm,
        "anchor_sizes": tuple(cfg.anchor_sizes or src.get("anchor_sizes") or DEFAULT_ANCHOR_SIZES),
        "channels": cfg.channels,
    }


def _init_weights(model: nn.Module, cfg: TrainConfig, train_set: CocoDataset, progress: ProgressBar) -> None:
    """A new run's starting weights: cfg.weights, fresh class-specific layers, frozen BN set from the data
    when training from scratch."""
    try:
        resized, fresh = load_pretrained(model, cfg.weights, cfg.arch)
    except ValueError as e:
        raise TrainError(str(e)) from e
    if resized:
        progress.say(
            f"weights {cfg.weights}: re-initialised {len(resized)} class-specific tensors "
            f"for {len(train_set.classes)} classes ({', '.join(resized[:4])}, ...)"
        )
    if fresh:
        heads = sorted({k.split(".")[1] for k in fresh})
        progress.say(
            f"weights {cfg.weights} have no {' or '.join(heads)}: {len(fresh)} tensors start untrained "
            "(the output layer initialised as for training from scratch)"
        )
    reinitialised = resized + fresh
    if cfg.weights in ("none", "imagenet") or reinitialised:
        init_predictors(model, None if cfg.weights in ("none", "imagenet") else reinitialised)
    if cfg.weights == "none":
        images = [train_set[i][0] for i in range(min(8, len(train_set)))]
        n = calibrate_frozen_bn(model, images)
        if n:
            progress.say(
                f"weights none: set the statistics of {n} frozen BN layers from {len(images)} images"
            )


@dataclass(frozen=True)
class _Plan:
    """The run's derived numbers, recorded in config.json in this order (`dataclasses.asdict`)."""

    total_iters: int
    base_lr: float
    warmup_iters_effective: int
    world_size: int
    classes: list[dict]
    iters_per_epoch: int
    eval_every: int
    checkpoint_every: int


def _plan(cfg: TrainConfig, num_images: int, world_size: int, classes: list[dict]) -> _Plan:
    iters_per_epoch = math.ceil(num_images / cfg.batch)
    total_iters = cfg.iters if cfg.iters is not None else max(1, round((cfg.epochs or 12) * iters_per_epoch))
    eval_every = cfg.eval_every or iters_per_epoch
    return _Plan(
        total_iters=total_iters,
        base_lr=cfg.lr if cfg.lr is not None else scaled_lr(cfg.batch),
        warmup_iters_effective=min(cfg.warmup_iters, total_iters // 5),
        world_size=world_size,
        classes=classes,
        iters_per_epoch=iters_per_epoch,
        eval_every=eval_every,
        checkpoint_every=cfg.checkpoint_every or eval_every,
    )


def sgd(params: list[nn.Parameter], **kwargs) -> torch.optim.SGD:
    """SGD with torch's fused kernel (one pass over every parameter) where the parameters' device has it,
    else the default implementation; the same update either way (to float rounding)."""
    try:
        return torch.optim.SGD(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.SGD(params, **kwargs)


def _optimizer(model: nn.Module, cfg: TrainConfig, plan: _Plan):
    """SGD over the trainable parameters and its per-iteration LambdaLR (warmup, then step or cosine)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd(params, lr=plan.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = dict(total_iters=plan.total_iters, warmup_iters=plan.warmup_iters_effective,
                    warmup_factor=cfg.warmup_factor, schedule=cfg.schedule, steps=tuple(cfg.steps),
                    gamma=cfg.gamma)  # fmt: skip
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, **schedule))


def _loader(
    train_set: CocoDataset, cfg: TrainConfig, rank: Rank, device: torch.device, total_iters: int,
    start_iter: int, workers: int,
) -> tuple[torch.utils.data.DataLoader, ResumableBatchSampler]:  # fmt: skip
    """This process's batches of iterations start_iter + 1 .. total_iters, in the seeded order."""
    sampler = ResumableBatchSampler(
        len(train_set), cfg.batch // rank.world, total_iters=total_iters, start_iter=start_iter,
        seed=cfg.seed, rank=rank.rank, world_size=rank.world,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed), pin_memory=device.type == "cuda",
        worker_init_fn=_ignore_sigint,
    )  # fmt: skip
    return loader, sampler


def _train(
    cfg: TrainConfig, device: torch.device, rank: Rank, on_step: Callable[[int], None] | None
) -> TrainResult:
    out_dir, ckpt = _open_run(cfg)
    if cfg.batch % rank.world:
        raise TrainError(f"--batch {cfg.batch} must be a multiple of the number of processes ({rank.world})")
    amp = cfg.amp and device.type == "cuda"

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_set, val_set = _datasets(cfg)
    classes = train_set.classes
    if val_set is not None and [c["id"] for c in val_set.classes] != [c["id"] for c in classes]:
        raise TrainError(f"{cfg.val_coco}: its categories differ from {cfg.coco}'s; both need the same ids")
    if ckpt is not None and ckpt.get("classes") != classes:
        raise TrainError(
            f"--resume: the checkpoint's classes differ from {cfg.coco}'s; resume with the same data"
        )

    plan = _plan(cfg, len(train_set), rank.world, classes)
    total_iters, start_iter = plan.total_iters, int(ckpt["iteration"]) if ckpt else 0

    cfg, shape = _model_shape(cfg, ckpt)
    model = build_model(
        cfg.arch, len(classes), min_size=tuple(cfg.min_size), max_size=cfg.max_size,
        freeze_at=cfg.freeze_at if cfg.freeze_at is not None else (0 if cfg.weights == "none" else 2),
        rpn_pre_nms_top_n_train=cfg.rpn_train_proposals, rpn_post_nms_top_n_train=cfg.rpn_train_proposals,
        box_batch_size_per_image=cfg.roi_batch, num_keypoints=len(train_set.keypoint_names) or 17, **shape,
    )  # fmt: skip
    quiet = cfg.quiet or not rank.is_main
    progress = ProgressBar(
        "train", total_iters, "bar", "count", "{info}", quiet=quiet, completed=start_iter, info=""
    ).start()
    metrics = None
    try:
        if ckpt is None:
            _init_weights(model, cfg, train_set, progress)
        else:
            model.load_state_dict(ckpt["model"])
        model.to(device)
        optimizer, scheduler = _optimizer(model, cfg, plan)
        cfg, workers = _use_cores(cfg, device, progress)
        loader, sampler = _loader(train_set, cfg, rank, device, total_iters, start_iter, workers)
        ddp_ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ddp_ids) if rank.enabled else model
        trainer = SimpleTrainer(
            train_model, loader, optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=amp),
            device=device, max_iter=total_iters, amp=amp, clip_grad=cfg.clip_grad,
        )  # fmt: skip

        def describe() -> dict:
            """The model checkpoint at the current iteration (best.pt; last.pt adds the training state)."""
            return make_checkpoint(
                model, arch=cfg.arch, classes=classes, min_size=cfg.min_size[-1], max_size=cfg.max_size,
                **shape, iteration=trainer.iter, total_iters=total_iters, config=cfg.to_json(),
            )  # fmt: skip

        if rank.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            metrics = MetricsLog(out_dir / "metrics.jsonl", resume_iter=start_iter if ckpt else None)
        evaluation = PeriodicEval(
            model, val_set, period=plan.eval_every, rank=rank, log=metrics, progress=progress,
            best_path=out_dir / "best.pt", describe=describe,
            iou_types=_scored_types(model.heads, train_set, val_set),
        )  # fmt: skip
        trainer.register_hooks([
            MetricsWriter(metrics, progress, rank=rank, period=cfg.log_every, batch=cfg.batch,
                          epoch_of=sampler.epoch_of),
            evaluation,
            *([StepCallback(on_step)] if on_step is not None else []),
            StopOnSignal(rank),
            RngState(rank, cfg.seed, progress),
            PeriodicCheckpoint(out_dir / "last.pt", period=plan.checkpoint_every, is_main=rank.is_main,
                               describe=describe, progress=progress),
        ])  # fmt: skip
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            _say_resumed(progress, cfg, trainer, bool(amp and ckpt.get("scaler")), evaluation.best_ap)
        if rank.is_main:
            norm = shape["norm"]
            resolved = {**cfg.to_json(), "out": str(out_dir), **dataclasses.asdict(plan)}
            atomic_write_text(out_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
            progress.say(
                f"training {cfg.arch} on {len(train_set)} images ({len(classes)} classes) for {total_iters} "
                f"iterations of {cfg.batch} images on {device}"
                f"{f' ({norm} norm)' if norm else ''}"
                f"{f' x {rank.world} processes' if rank.enabled else ''}; lr {plan.base_lr:.5g}; "
                f"AMP {'on' if amp else 'off'}; writing to {out_dir}"
            )
        trainer.train()
    finally:
        progress.close()
        if metrics:
            metrics.close()
    return TrainResult(
        out_dir, trainer.iter, total_iters, trainer.stop_requested, evaluation.best_ap, evaluation.last_eval
    )


def _scored_types(
    heads: tuple[str, ...], train_set: CocoDataset, val_set: CocoDataset | None
) -> tuple[str, ...]:
    """`validation_types`, less mask AP when the validation json has annotations without segmentation
    (pycocotools cannot score masks against them): said once, before training."""
    types = validation_types(heads, len(train_set.keypoint_names))
    boxes_only = val_set.report.skipped_annotations["no segmentation"] if val_set is not None else 0
    if "segm" in types and boxes_only:
        logger.warning(
            f"{val_set.ann_file}: {boxes_only} annotation(s) have no segmentation: validation scores box AP "
            "only, and best.pt follows it"
        )
        types = tuple(t for t in types if t != "segm")
    return types


def _datasets(cfg: TrainConfig) -> tuple[CocoDataset, CocoDataset | None]:
    """The training and validation sets, reading what the arch's heads train on (masks, keypoints)."""
    heads = split_arch(cfg.arch)[1]
    parts = {"masks": "mask" in heads, "keypoints": "keypoint" in heads}
    train_set = CocoDataset(cfg.coco, cfg.images, train=True, **parts)
    train_set.transforms = train_transforms(cfg.flip, train_set.keypoint_flip or None)
    val_set = CocoDataset(cfg.val_coco, cfg.val_images, train=False, **parts) if cfg.val_coco else None
    if val_set is not None and val_set.keypoint_names != train_set.keypoint_names:
        raise TrainError(f"{cfg.val_coco}: its keypoint names differ from {cfg.coco}'s; both need the same")
    if val_set is not None and val_set.unscorable_keypoints and len(val_set.keypoint_names) == OKS_KEYPOINTS:
        raise TrainError(
            f"{cfg.val_coco}: {val_set.unscorable_keypoints} person annotations lack num_keypoints or "
            f"{3 * OKS_KEYPOINTS} keypoint values, which pycocotools' keypoint evaluation needs; fix them "
            "or validate on a COCO person-keypoints file"
        )
    return train_set, val_set


def _use_cores(cfg: TrainConfig, device: torch.device, progress: ProgressBar) -> tuple[TrainConfig, int]:
    """Sets this process's torch threads (on the CPU) and picks the data-loading workers; says both once.
    Returns cfg with the thread count it set (saved in the checkpoints, so `--resume` sums in the same order
    as the interrupted run) and the workers."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = pick_workers(cfg.workers, device.type, processes)
    if device.type != "cpu":
        progress.say(f"data loading: {workers} worker process{'es' if workers != 1 else ''}")
        return cfg, workers
    try:
        threads, why = pick_threads(cfg.threads, processes)
    except ValueError as e:
        raise TrainError(str(e)) from e
    torch.set_num_threads(threads)
    per = " per process" if processes > 1 else ""
    progress.say(
        f"CPU: {threads} torch thread{'s' if threads != 1 else ''}{per} ({why}), {workers} data-loading "
        f"worker{'s' if workers != 1 else ''}; --threads / --workers to change"
    )
    return dataclasses.replace(cfg, threads=threads), workers


def _say_resumed(
    progress: ProgressBar, cfg: TrainConfig, trainer: SimpleTrainer, scaler: bool, best_ap: float | None
) -> None:
    progress.say(
        f"resumed from {resume_path(cfg.resume, cfg.out)}: model, optimizer, lr scheduler"
        f"{', AMP scaler' if scaler else ''}, data order and RNG state "
        f"at iteration {trainer.iter}/{trainer.max_iter} (lr {trainer.scheduler.get_last_lr()[0]:.5g}, "
        f"best AP {best_ap if best_ap is not None else '-'})"
    )
    if trainer.iter >= trainer.max_iter:
        progress.say(
            f"the run is already complete ({trainer.iter} iterations); raise --iters/--epochs to go on"
        )


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes the step and saves last.pt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
