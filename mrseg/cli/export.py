"""`mrseg export`: write the inference model as ONNX or TorchScript and check it against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mrseg.export.spec import FORMATS

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}


def default_out(weights: str, fmt: str) -> Path:
    """best.pt -> best.onnx beside it; a zoo name -> ./<name>.onnx."""
    path = Path(weights)
    return path.with_suffix(SUFFIXES[fmt]) if path.suffix else Path(f"{path.name}{SUFFIXES[fmt]}")


def comparison_table(result) -> Table:
    """The self-check of an `ExportResult`, one row per sample image; columns for the heads the model has."""
    fmt = "onnxruntime" if result.format == "onnx" else "TorchScript"
    heads = result.spec.heads
    rules = ["same detections", "boxes within 1e-2 px", "scores within 1e-4"]
    rules += ["mask IoU >= 0.99 (or probabilities within 1e-4)"] if "mask" in heads else []
    rules += ["keypoints within 0.5 px, their scores within 1e-3"] if "keypoint" in heads else []
    table = Table(
        title=f"{fmt} vs PyTorch (same weights, same pre- and post-step)", caption="ok: " + ", ".join(rules)
    )
    columns = {
        "image": lambda i, c: str(i),
        f"dets >= {result.comparisons[0].score:g} (torch / file)": lambda i, c: (
            f"{c.reference} / {c.exported}"
        ),
        "matched": lambda i, c: str(c.matched),
        "max |box diff| px": lambda i, c: f"{c.max_box_diff:.2e}",
        "max |score diff|": lambda i, c: f"{c.max_score_diff:.1e}",
    }
    if "mask" in heads:
        columns["min mask IoU"] = lambda i, c: f"{c.min_mask_iou:.4f}"
        columns["max |mask prob diff|"] = lambda i, c: f"{c.max_prob_diff:.1e}"
    if "keypoint" in heads:
        columns["max |keypoint diff| px"] = lambda i, c: f"{c.max_keypoint_diff:.2e}"
        columns["max |keypoint score diff|"] = lambda i, c: f"{c.max_keypoint_score_diff:.1e}"
    columns["ok"] = lambda i, c: "[green]yes[/]" if c.ok else "[red]NO[/]"
    for col in columns:
        table.add_column(col, justify="right")
    for i, c in enumerate(result.comparisons):
        table.add_row(*(cell(i, c) for cell in columns.values()))
    return table


@click.command("export")
@click.option(
    "--weights", required=True, help="Zoo name, mrseg checkpoint (.pt) or state dict (with --arch)."
)
@click.option(
    "--arch", default=None, help="Architecture of a bare state dict (r50-fpn, r50-fpn-kp, r50-fpn-box, ...)."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: beside the weights).")
@click.option(
    "--imgsz",
    nargs=2,
    type=click.IntRange(min=32),
    default=None,
    metavar="H W",
    help="Image size to trace at (default: the model's min x max resize size, padded to /32); "
    "the file takes any size.",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per call (fixed)."
)
@click.option("--sample", type=click.Path(exists=True, dir_okay=False), help="Image to trace and check with.")
@click.option(
    "--check/--no-check", default=True, show_default=True, help="Run the file and compare with PyTorch."
)
@click.option(
    "--check-score",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Compare the detections scoring at least this.",
)
def export_cmd(weights, arch, fmt, out, imgsz, batch, sample, check, check_score) -> None:
    """Export the inference model to ONNX (standard ops; runs in onnxruntime) or TorchScript.

    The file takes resized images of any size, padded to /32 (the batch size is fixed), and returns boxes,
    scores, labels and, by the model's heads, 28x28 mask probabilities and 56x56 keypoint heatmaps;
    `mrseg predict --weights FILE.onnx` does the resizing, mask pasting and keypoint decoding around it, and
    gives the PyTorch model's detections.
    """
    from mrseg.export import ExportError, export_model

    err = Console(stderr=True)
    out_path = Path(out) if out else default_out(weights, fmt)
    samples = None
    try:
        if sample:
            from mrseg.data.images import read_image

            samples = [read_image(sample)] * batch
        result = export_model(
            weights,
            out=out_path,
            format=fmt,
            imgsz=tuple(imgsz) if imgsz else None,
            batch=batch,
            arch=arch,
            samples=samples,
            check=check,
            check_score=check_score,
            log=lambda m: err.print(m),
        )
    except (ExportError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    spec = result.spec
    click.echo(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, {result.seconds:.1f} s): "
        f"input images float32 [{spec.batch}, 3, {spec.height}, {spec.width}] + image_sizes [{spec.batch}, 2]"
    )
    if result.comparisons:
        Console().print(comparison_table(result))
        if not result.ok:
            raise click.ClickException(
                f"{result.path} does not match PyTorch (see the table); please report it."
            )
