"""`mrseg predict SOURCE...` (thin: options -> `mrseg.engine.predict.run.predict`). Exit status: 0 all inputs
processed, 3 some failed (failures.jsonl), 1 fatal error, 2 bad usage, 130 interrupted."""

from __future__ import annotations

import shlex
import sys
import traceback

import click

EXIT_FAILURES = 3
EXIT_INTERRUPTED = 130


def _resume_command(out_dir) -> str:
    args, cleaned = iter(sys.argv[1:]), []
    for a in args:
        if a in ("--out", "-o"):
            next(args, None)  # its value
        elif not (a.startswith("--out=") or a in ("--resume", "--exist-ok")):
            cleaned.append(a)
    return shlex.join(["mrseg", *cleaned, "--out", str(out_dir), "--resume"])


@click.command("predict")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--weights", required=True, help="Zoo name (coco-r50-fpn, ...), mrseg checkpoint, state dict or .onnx."
)
@click.option("--arch", default=None, help="Architecture of a bare state dict (r50-fpn, r18-fpn, ...).")
@click.option(
    "--format",
    "formats",
    default=None,
    help="Comma list: coco, coco-results, jsonl, labelme, yolo, overlay. [default: coco; jsonl for --out -] "
    "Exact masks (RLE of the model's mask, whatever --mask-format): coco-results (results.json) and jsonl. "
    "Polygon approximations: labelme, yolo, and coco (annotations.json) with --mask-format polygon. "
    "yolo: yolo/images (links to the inputs), yolo/labels and data.yaml (train/val = images, resolved "
    "against the yaml's folder); YOLO class i = i-th real category sorted by COCO category id. "
    "Unused category slots (COCO's 'N/A') are never emitted.",
)
@click.option(
    "--out",
    "-o",
    default=None,
    help="Output folder [default: runs/predict, then runs/predict2, ...]; '-' streams jsonl to stdout.",
)
@click.option(
    "--exist-ok",
    is_flag=True,
    help="Write into an existing --out folder, starting over: the files its previous run wrote (final "
    "files, and the labelme/, yolo/ and overlay/ files listed in .mrseg/owned.txt) are deleted, any other "
    "file stays. Refused while another run uses the folder (OUT/.mrseg/lock).",
)
@click.option("--score", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Minimum score.")
@click.option(
    "--classes",
    default=None,
    help="Keep only these classes: comma list of names or category ids (not 'N/A' slots; a wrong name "
    "lists the valid ones).",
)
@click.option(
    "--mask-format",
    default="polygon",
    show_default=True,
    type=click.Choice(["polygon", "rle"]),
    help="Segmentation in annotations.json: polygon (simplified, an approximation; masks with holes stay "
    "RLE) or rle (exact). results.json and predictions.jsonl always hold the exact RLE.",
)
@click.option(
    "--simplify",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Polygon simplification tolerance in pixels for parts at least 4 px thick (thinner parts use "
    "proportionally less; 0: none).",
)
@click.option(
    "--batch", default=None, type=click.IntRange(min=1), help="Images per model call [default: 1 CPU, 4 GPU]."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=0), help="Decoding processes."
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run in --out (or the latest runs/predictN)."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-input warnings.")
@click.option("--debug", is_flag=True, help="Show tracebacks for fatal errors.")
@click.option(
    "--vid-stride", default=1, show_default=True, type=click.IntRange(min=1), help="Every Nth video frame."
)
@click.option(
    "--tile",
    default=None,
    type=click.IntRange(min=32),
    metavar="SIZE",
    help="Predict images larger than SIZE pixels in overlapping SIZE x SIZE tiles.",
)
@click.option(
    "--tile-overlap",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of a tile shared with each neighbour.",
)
@click.option(
    "--max-pixels",
    default=None,
    type=click.IntRange(min=1),
    help="Refuse images with more pixels (likely decompression bombs). [default: 89478485]",
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "fp16", "bf16"]),
    help="fp16/bf16 run the model under torch.autocast: faster on GPUs, detections may differ slightly from "
    "fp32. fp16 needs a CUDA device.",
)
@click.option(
    "--fuse/--no-fuse",
    default=True,
    show_default=True,
    help="--fuse runs a copy of the model with its BatchNorms folded into the convolutions (faster); "
    "--no-fuse runs the model as loaded: slower, and in fp32 on the CPU its detections are bit-identical to "
    "torchvision's with the same weights and thread count. The two differ by float rounding, which trained "
    "weights keep tiny (see the README). An .onnx model runs as exported either way.",
)
def predict_cmd(sources, formats, out, classes, quiet, debug, **opts):
    """Annotate images and videos. SOURCE: files, folders, globs, .txt lists, videos, - (paths on stdin)."""
    from mrseg.engine.predict.run import PredictInterrupted, predict
    from mrseg.engine.predict.sink import describe_failure
    from mrseg.outputs.formats import FormatError, parse_formats

    try:
        formats = parse_formats(formats, stream=out == "-")
    except FormatError as e:
        raise click.BadParameter(str(e), param_hint="--format") from None
    try:
        summary = predict(
            list(sources),
            formats=formats,
            out=out,
            classes=classes.split(",") if classes else None,
            quiet=quiet,
            **opts,
        )
    except PredictInterrupted as e:
        s = e.summary
        click.echo(f"\ninterrupted: {s.processed} inputs written this run, nothing finalized.", err=True)
        if s.out_dir is not None:
            click.echo(f"resume with: {_resume_command(s.out_dir)}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; if an output folder was started, add --resume to continue it.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - one clean line, unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)

    if summary.rank != 0:
        return  # under torchrun rank 0 reports for every rank
    where = "stdout" if summary.out_dir is None else str(summary.out_dir)
    if not quiet:
        click.echo(
            f"{summary.processed} inputs, {summary.instances} instances in {summary.seconds:.1f}s"
            + (f" ({summary.skipped} done earlier)" if summary.skipped else "")
            + f" -> {where}",
            err=True,
        )
    if summary.failed:
        click.echo(f"{summary.failed} input(s) could not be read, predicted or written:", err=True)
        for f in summary.failures[:10]:
            click.echo(f"  {describe_failure(f)}", err=True)
        if summary.failed > 10:
            click.echo("  ...", err=True)
        if summary.out_dir is not None:
            click.echo(f"all listed in {summary.out_dir / 'failures.jsonl'}", err=True)
        sys.exit(EXIT_FAILURES)
