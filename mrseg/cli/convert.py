"""`mrseg convert`: a dataset -> predict's dataset formats (thin: options -> `mrseg.engine.convert`)."""

from __future__ import annotations

import click

from mrseg.data.annotation_source import SourceError
from mrseg.engine.convert import TARGETS, convert


@click.command("convert")
@click.argument("src", type=click.Path(path_type=str))
@click.option("--to", "to", required=True, help=f"Comma list of output formats: {', '.join(TARGETS)}.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=str),
    help="Output folder (must not exist or be empty); written whole or not at all.",
)
@click.option(
    "--images",
    type=click.Path(path_type=str),
    default=None,
    help="Folder of the images, where the source does not say (COCO: default images/ next to the "
    "json, else its folder; labelme: imagePath; YOLO: data.yaml's train/val).",
)
@click.option(
    "--mask-format",
    type=click.Choice(["polygon", "rle"]),
    default="polygon",
    show_default=True,
    help="annotations.json segmentations: polygons (RLE where a hole needs it) or the exact RLE.",
)
@click.option(
    "--simplify",
    type=float,
    default=1.0,
    show_default=True,
    help="Polygon simplification tolerance in px (scaled down for small objects).",
)
def convert_cmd(src, to, out, images, mask_format, simplify):
    """Convert SRC (a COCO .json, a labelme folder, or a YOLO-seg data.yaml / folder) into --to formats.

    Uses the same writers as `mrseg predict`: coco -> annotations.json, labelme -> labelme/*.json,
    yolo -> yolo/. What a format cannot hold (crowd regions in labelme/YOLO, scores in YOLO, holes under
    4 px in polygons) is counted per reason, printed, and saved in convert_report.json. Bad input stops the
    conversion with a message naming the file and annotation (exit 1) and leaves no output folder.
    """
    targets = [t.strip() for t in to.split(",") if t.strip()]
    try:
        report = convert(src, targets, out, images=images, mask_format=mask_format, simplify=simplify)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    for line in report.lines():
        click.echo(line, err=True)
    click.echo(out)
