"""Training curves of a run folder: loss terms and lr per logged step, box, mask and keypoint AP per
evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from mrseg.engine.train.metrics import read_metrics
from mrseg.outputs.atomic import atomic_open

LOSSES = (
    "loss", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask",
    "loss_keypoint",
)  # fmt: skip


class PlotError(ValueError):
    """The run cannot be plotted (no metrics, or matplotlib missing); the message says what to do."""


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draws RUN_DIR/metrics.jsonl into a PNG (default RUN_DIR/results.png) and returns its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise PlotError(f"{metrics_path} not found; pass the folder of a `mrseg train` run")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib: pip install 'mrseg[plot]' (or pip install matplotlib)"
        ) from None
    records = read_metrics(metrics_path)
    steps = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    if not steps and not evals:
        raise PlotError(f"{metrics_path} holds no logged steps yet")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    its = [r["iter"] for r in steps]
    for key in LOSSES:
        if any(key in r for r in steps):
            axes[0].plot(
                its, [r.get(key, float("nan")) for r in steps], label=key, lw=2 if key == "loss" else 1
            )
    axes[0].set(title="losses", xlabel="iteration", yscale="log")
    axes[0].legend(fontsize=8)
    axes[1].plot(its, [r.get("lr", float("nan")) for r in steps])
    axes[1].set(title="learning rate", xlabel="iteration")
    for iou_type, name in (("keypoints", "keypoint AP"), ("segm", "mask AP"), ("bbox", "box AP")):
        for metric, style in (("AP", "-o"), ("AP50", "--")):
            xs = [r["iter"] for r in evals if iou_type in r]
            ys = [r[iou_type].get(metric, float("nan")) for r in evals if iou_type in r]
            if xs:
                axes[2].plot(xs, ys, style, label=f"{name}{metric[2:] and ' @' + metric[2:]}")
    axes[2].set(title="validation AP", xlabel="iteration", ylim=(0, 1))
    if evals:
        axes[2].legend(fontsize=8)
    else:
        axes[2].text(
            0.5, 0.5, "no evaluation\n(train with --val-coco)", ha="center", transform=axes[2].transAxes
        )
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    target = Path(out) if out else run_dir / "results.png"
    with atomic_open(target, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return target
