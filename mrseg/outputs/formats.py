"""The one registry of `mrseg predict`'s output formats: per-input writer, end-of-run file, owned files,
whether its masks are exact. Option parsing (`parse_formats`), a run's writers (`item_writers`), the end of
a run (`finalize`) and the run folder (`final_files`, `item_folders`) all read `FORMATS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrseg.outputs.finalize import (
    COCO_NAME,
    RESULTS_NAME,
    YOLO_YAML,
    read_records,
    write_coco,
    write_jsonl,
    write_results,
    write_yolo_yaml,
)
from mrseg.outputs.jsonl import JSONL_NAME
from mrseg.outputs.labelme import LabelmeWriter
from mrseg.outputs.overlay import OverlayWriter
from mrseg.outputs.video_segments import finish_videos
from mrseg.outputs.yolo import YoloWriter


@dataclass(frozen=True)
class WriterOptions:
    """What the per-item writers of one run are built from."""

    out_dir: Path
    classes: list[dict]
    simplify: float
    vid_stride: int = 1


@dataclass(frozen=True)
class OutputFormat:
    """One `--format` value.

    make_writer: options -> a per-item writer (`write(item, image_rgb, det, instances)`, `close()`), or None;
        writers with `needs_image` get the decoded pixels.
    final: (out_dir, records_paths, categories, description) -> writes `final_file` (relative to OUT) once at
        the end from the journals, or None.
    folder: the folder under OUT of its per-item files (cleared by a fresh `--exist-ok` run).
    exact_masks: its masks are the model's pasted pixels (RLE); False: polygons, an approximation.
    """

    name: str
    exact_masks: bool
    make_writer: Callable[[WriterOptions], object] | None = None
    final: Callable[[Path, list, list[dict], str], None] | None = None
    final_file: str | None = None
    folder: str | None = None
    needs_image: bool = False


FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat(
            "coco",
            exact_masks=False,  # polygons unless --mask-format rle
            final=lambda out, paths, cats, desc: write_coco(out / COCO_NAME, paths, cats, desc),
            final_file=COCO_NAME,
        ),
        OutputFormat(
            "coco-results",
            exact_masks=True,
            final=lambda out, paths, cats, desc: write_results(out / RESULTS_NAME, paths),
            final_file=RESULTS_NAME,
        ),
        OutputFormat(
            "jsonl",
            exact_masks=True,
            final=lambda out, paths, cats, desc: write_jsonl(out / JSONL_NAME, paths),
            final_file=JSONL_NAME,
        ),
        OutputFormat(
            "labelme",
            exact_masks=False,
            make_writer=lambda o: LabelmeWriter(o.out_dir, simplify=o.simplify, classes=o.classes),
            folder="labelme",
        ),
        OutputFormat(
            "yolo",
            exact_masks=False,
            make_writer=lambda o: YoloWriter(o.out_dir, simplify=o.simplify, classes=o.classes),
            final=lambda out, paths, cats, desc: write_yolo_yaml(out / YOLO_YAML, cats),
            final_file=YOLO_YAML,
            folder=os.path.dirname(YOLO_YAML),
        ),
        OutputFormat(
            "overlay",
            exact_masks=False,
            make_writer=lambda o: OverlayWriter(o.out_dir, vid_stride=o.vid_stride, classes=o.classes),
            final=lambda out, paths, cats, desc: finish_videos(out, read_records(paths)),
            folder="overlay",
            needs_image=True,
        ),
    )
}
STREAM_FORMAT = "jsonl"  # the one format `--out -` writes, line by line to stdout
DEFAULT_FORMAT = "coco"


class FormatError(ValueError):
    """A `--format` list that names no format or an unknown one."""


def parse_formats(formats: Sequence[str] | str | None, stream: bool = False) -> list[str]:
    """The `--format` list (comma string or sequence), checked, deduplicated; default coco (stdout: jsonl)."""
    if formats is None:
        formats = [STREAM_FORMAT if stream else DEFAULT_FORMAT]
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise FormatError(f"--format {','.join(unknown) or '(empty)'}: choose from {','.join(FORMATS)}")
    if stream and formats != [STREAM_FORMAT]:
        raise FormatError(
            f"--out - streams {STREAM_FORMAT} to stdout; other formats need an output folder (--out DIR)"
        )
    return list(dict.fromkeys(formats))


def item_writers(formats: Iterable[str], opts: WriterOptions) -> list:
    """The per-item writers of `formats`, those that need the pixels (overlays) last: a frame drawn into a
    video can't be taken back when a later writer fails."""
    chosen = [FORMATS[f] for f in formats if FORMATS[f].make_writer is not None]
    return [f.make_writer(opts) for f in sorted(chosen, key=lambda f: f.needs_image)]


def needs_image(formats: Iterable[str]) -> bool:
    return any(FORMATS[f].needs_image for f in formats)


def per_item_formats(formats: Iterable[str]) -> set[str]:
    return {f for f in formats if FORMATS[f].make_writer is not None}


def final_files() -> tuple[str, ...]:
    """Every file (relative to OUT) some format writes once at the end."""
    return tuple(f.final_file for f in FORMATS.values() if f.final_file)


def item_folders() -> tuple[str, ...]:
    return tuple(f.folder for f in FORMATS.values() if f.folder)


def finalize(
    out_dir: str | os.PathLike,
    formats: Iterable[str],
    records_paths: Iterable[str | os.PathLike],
    categories: list[dict],
    description: str = "mrseg predict",
) -> dict[str, Path]:
    """Write the end-of-run files of `formats` into `out_dir` from the journals; returns {format: path}.

    predictions.jsonl is rewritten sorted by id (which merges the ranks of a torchrun); `overlay` builds any
    video not yet joined from its segments. `categories`: the model's `{"id", "name"}` per label;
    `description`: annotations.json's `info.description`. Missing record files count as empty."""
    out = Path(out_dir)
    records_paths = list(records_paths)
    written: dict[str, Path] = {}
    for name in dict.fromkeys(formats):
        fmt = FORMATS[name]
        if fmt.final is None:
            continue
        fmt.final(out, records_paths, categories, description)
        if fmt.final_file:
            written[name] = out / fmt.final_file
    return written
