"""`mrseg train`: parse options into a TrainConfig and call mrseg.engine.train.trainer.train."""

from __future__ import annotations

import logging
import os
import sys

import click

from mrseg.engine.train.checkpoint import CheckpointError
from mrseg.model.zoo import ARCH_NAMES

DEFAULT_MIN_SIZES = "640,672,704,736,768,800"


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        return ()


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    sizes = _int_list(value)
    if not sizes or min(sizes) < 32:
        raise click.BadParameter(
            f"{value!r}: give one or more short sides in pixels (>= 32), comma-separated"
        )
    return sizes


def _anchor_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    sizes = None if value is None else _int_list(value)
    if sizes is not None and (len(sizes) != 5 or min(sizes) < 1):
        raise click.BadParameter(f"{value!r}: give 5 anchor sizes in pixels (P2..P6), e.g. 16,32,64,128,256")
    return sizes


@click.command("train")
@click.option("--coco", type=click.Path(dir_okay=False), help="Training annotations (COCO json).")
@click.option(
    "--images", type=click.Path(file_okay=False), help="Folder the training file_names are relative to."
)
@click.option("--val-coco", type=click.Path(dir_okay=False), help="Validation annotations (COCO json).")
@click.option("--val-images", type=click.Path(file_okay=False), help="Folder of the validation images.")
@click.option(
    "--arch",
    type=click.Choice(list(ARCH_NAMES)),
    default="r50-fpn",
    show_default=True,
    help="Backbone layout + heads: r50-fpn (masks), r50-fpn-kp (keypoints), r50-fpn-mask-kp (both), "
    "r50-fpn-box (boxes only); likewise for r18/r34/r101 and r50-fpn-v2.",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="imagenet (backbone), a zoo name (coco-r50-fpn), a .pt checkpoint/state dict, or none.",
)
@click.option("--epochs", type=float, help="Length in epochs (default 12).")
@click.option("--iters", type=int, help="Length in iterations (instead of --epochs).")
@click.option("--batch", type=int, default=8, show_default=True, help="Images per iteration, all processes.")
@click.option("--lr", type=float, help="Base learning rate [default: 0.02 * batch / 16].")
@click.option("--schedule", type=click.Choice(["step", "cosine"]), default="step", show_default=True)
@click.option(
    "--warmup-iters",
    type=int,
    default=1000,
    show_default=True,
    help="Linear warmup length (at most a fifth of the run).",
)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--clip-grad", type=float, help="Clip the gradient norm to this value.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=int, help="Data-loading processes [default: 1 on the CPU, up to 8 on a GPU].")
@click.option(
    "--threads",
    type=int,
    help="Torch CPU threads per process [default: the cores not busy (cores minus the load average)].",
)
@click.option(
    "--min-size",
    default=DEFAULT_MIN_SIZES,
    callback=_sizes,
    show_default=True,
    help="Input short side(s); several: one drawn per image in training, the last at test time.",
)
@click.option("--max-size", type=int, default=1333, show_default=True, help="Input long-side limit.")
@click.option("--flip", type=float, default=0.5, show_default=True, help="Horizontal flip probability.")
@click.option(
    "--roi-batch", type=int, default=512, show_default=True, help="RoIs sampled per image (box head)."
)
@click.option(
    "--rpn-proposals",
    type=int,
    default=2000,
    show_default=True,
    help="RPN proposals kept per image in training.",
)
@click.option(
    "--norm",
    type=click.Choice(["frozen-bn", "bn", "gn"]),
    help="Backbone + FPN normalisation [default: bn with --weights none, else the arch's own (frozen BN)].",
)
@click.option(
    "--anchor-sizes",
    callback=_anchor_sizes,
    help="5 anchor sizes in pixels for P2..P6, comma-separated [default: 32,64,128,256,512].",
)
@click.option(
    "--channels",
    type=int,
    default=256,
    show_default=True,
    help="FPN and mask-head width (128: about twice as fast, for small models trained from scratch).",
)
@click.option("--eval-every", type=int, help="Evaluate every N iterations [default: once per epoch].")
@click.option("--checkpoint-every", type=int, help="Write last.pt every N iterations [default: as eval].")
@click.option("--log-every", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Output folder [default: runs/train/exp, exp2, ...]."
)
@click.option("--exist-ok", is_flag=True, help="Write into --out (or runs/train/exp) even if it holds a run.")
@click.option(
    "--resume",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[PATH]",
    help="Continue a run: its last.pt (default: --out's, else the latest runs/train/exp*).",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def train_cmd(ctx: click.Context, **opts) -> None:
    """Train or fine-tune Mask R-CNN (Keypoint R-CNN, Faster R-CNN: --arch) on a COCO dataset.

    Writes last.pt, best.pt (best validation mask AP; keypoint AP for -kp, box AP for -box), metrics.jsonl
    and config.json into --out. Several GPUs or CPU processes: torchrun --nproc-per-node N -m mrseg train ...
    """
    from mrseg.data.coco import DatasetError
    from mrseg.engine.device import DeviceError
    from mrseg.engine.train.trainer import TrainConfig, TrainError, resume_config, resume_path, train
    from mrseg.model.zoo import WeightsError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    renames = {"rpn_proposals": "rpn_train_proposals"}
    values = {renames.get(k, k): v for k, v in opts.items()}
    resume = values.pop("resume")
    try:
        if resume is not None:
            # Options given on this command line override the resumed run's saved config.
            given = {
                renames.get(k, k): v
                for k, v in opts.items()
                if k != "resume" and ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT
            }
            cfg = resume_config(resume_path(resume, values["out"]), **given)
        else:
            if not values["coco"] or not values["images"]:
                raise click.UsageError("--coco and --images are required (or --resume a run)")
            cfg = TrainConfig(**values)
        result = train(cfg)
    except (TrainError, DatasetError, WeightsError, CheckpointError, DeviceError) as e:
        raise click.ClickException(str(e)) from e
    if result.interrupted:
        sys.exit(130)
    if os.environ.get("RANK", "0") != "0":
        return
    best = (
        f"; best AP {result.best_ap:.4f} ({result.out_dir / 'best.pt'})" if result.best_ap is not None else ""
    )
    click.echo(f"done: {result.iteration} iterations, {result.out_dir / 'last.pt'}{best}", err=True)
