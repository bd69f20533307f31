"""What `mrseg convert` reads from any annotation format: images with their instance masks.

A reader (`coco_reader`, `labelme_reader`, `yolo_reader`) gives a `SourceDataset`: categories and an iterator
of `SourceImage`s with their `SourceInstance`s. Bad input raises `SourceError` naming file and annotation.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mrseg.data.image_headers import header_size
from mrseg.data.images import sniff_format
from mrseg.outputs.mask_crop import MaskCrop


class SourceError(ValueError):
    """The source cannot be converted; the message names the file (and annotation) and what is wrong."""


@dataclass
class SourceInstance:
    """One object: `mask` (a crop of the image's mask, non-empty), `category_id`, `iscrowd`, `score` (None
    when the source has none)."""

    mask: MaskCrop
    category_id: int
    iscrowd: bool = False
    score: float | None = None


@dataclass
class SourceImage:
    """One image: `id`, `file_name` (relative, as COCO's `file_name`), `path` (where the image file is or
    would be; it may not exist), `width`, `height`, `instances`."""

    id: int
    file_name: str
    path: str
    width: int
    height: int
    instances: list[SourceInstance] = field(default_factory=list)


@dataclass
class SourceDataset:
    """`categories`: `{"id", "name", "supercategory"}` sorted by id; `images`: an iterator of `SourceImage`;
    `losses`: what the reader could not carry over (reason -> count), filled while `images` is consumed."""

    categories: list[dict]
    images: Iterator[SourceImage]
    losses: Counter = field(default_factory=Counter)


def image_size_from_file(path: str | os.PathLike, context: str) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding it; `SourceError` naming `context`
    when the file is missing or its header unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise SourceError(
            f"{context}: no image size in the annotations and the image {path} cannot be read "
            f"({e.strerror or e}); pass --images DIR with the image files"
        ) from None
    kind = sniff_format(data)
    size = header_size(data, kind) if kind else None
    if size is None:
        raise SourceError(f"{context}: cannot read the image size from the header of {path}")
    return size


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` (posix) when inside it, else its file name."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive on Windows
        return path.name
    return path.name if rel.startswith("..") else Path(rel).as_posix()
