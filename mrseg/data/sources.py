"""What `mrseg predict` reads: SOURCE arguments expanded into a stable sequence of `InputItem`s.

A SOURCE (`rel_path` of its items in brackets) is one of
- an image file, any extension but `.txt` and the video ones (its basename);
- a folder: every image inside, recursively (`IMAGE_EXTENSIONS`, case-insensitive; hidden files and folders
  skipped; videos not expanded), sorted (the path relative to the folder);
- a glob (`data/**/*.jpg`, recursive, sorted; image and video files only) (the path relative to the glob's
  leading folder without wildcards);
- a `.txt` list, one path per line (blank and `#` lines skipped; relative paths resolved against the list's
  folder), or `-`: the same from stdin, relative to the current folder (the path as written when relative,
  the basename when absolute). An entry may be a folder; a missing file fails when read (one failure);
- a video file (`VIDEO_EXTENSIONS`): every frame, or every `vid_stride`-th, each its own item.

Ids are 1, 2, 3, ... in source order, each source expanded sorted, so the same arguments give the same ids on
every run and rank. The same file named twice is yielded once. `InputItem.name` is a unique output stem
(`a/b/photo`): when two inputs would share one (`x.jpg` and `x.png`; compared case-insensitively) the later
gets a `_2`, `_3`, ... suffix. Video frames: `path` is the video, `frame` the 0-based index, `video` the
video's rel_path, `name` `<video stem>/<frame:06d>`; `read_frames(path, stride)` decodes them in order. The
frame count comes from the container (`video_info`), counted by decoding when the container does not say.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

import cv2
import numpy as np

from mrseg.outputs.detections import InputItem
from mrseg.outputs.paths import safe_relative_path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp"}
    | {".pbm", ".pgm", ".ppm", ".pnm"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"})
LIST_EXTENSION = ".txt"
_GLOB_CHARS = set("*?[")


class SourceError(ValueError):
    """A SOURCE argument that cannot be used (missing, empty, unreadable); the message says what to do."""


@dataclass(frozen=True)
class VideoInfo:
    """What the engine needs to know about a video before decoding it."""

    frame_count: int
    fps: float
    width: int
    height: int


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_items(
    sources: Iterable[str],
    vid_stride: int = 1,
    stdin: TextIO | None = None,
    exclude: Iterable[str | os.PathLike] = (),
) -> Iterator[InputItem]:
    """Expand SOURCE arguments into `InputItem`s with ids 1, 2, ... (see the module docstring).

    `stdin` is read for a `-` source (default `sys.stdin`); files under a folder in `exclude` (e.g. the output
    folder inside an input folder) are skipped. Raises `SourceError` for a missing source, a folder or glob
    without images, an unreadable list file or a video that cannot be opened.
    """
    if vid_stride < 1:
        raise SourceError(f"vid_stride must be >= 1, got {vid_stride}")
    excluded = [os.path.realpath(e) for e in exclude]
    seen_files: set[tuple[str, int | None]] = set()
    seen_names: set[str] = set()
    ids = itertools.count(1)
    for source in sources:
        for path, rel in _expand(source, stdin):
            real = os.path.realpath(path)
            if any(real == e or real.startswith(e + os.sep) for e in excluded):
                continue
            if is_video(path):
                info = video_info(path)
                rel_video = _posix(rel)
                base = str(PurePosixPath(rel_video).with_suffix(""))
                base_name = _unique_name(safe_relative_path(base), seen_names)
                for frame in range(0, info.frame_count, vid_stride):
                    if (real, frame) in seen_files:
                        continue
                    seen_files.add((real, frame))
                    name = _unique_name(f"{base_name}/{frame:06d}", seen_names)
                    yield InputItem(
                        id=next(ids), path=str(path), rel_path=f"{base}/{frame:06d}.jpg", frame=frame,
                        video=rel_video, fps=info.fps, name=name,
                    )  # fmt: skip
            else:
                if (real, None) in seen_files:
                    continue
                seen_files.add((real, None))
                rel_posix = _posix(rel)
                stem = str(PurePosixPath(safe_relative_path(rel_posix)).with_suffix(""))
                name = _unique_name(stem or "unnamed", seen_names)
                yield InputItem(id=next(ids), path=str(path), rel_path=rel_posix, name=name)


def collect_items(sources: Iterable[str], vid_stride: int = 1, stdin: TextIO | None = None, exclude=()):
    """`list(iter_items(...))`."""
    return list(iter_items(sources, vid_stride=vid_stride, stdin=stdin, exclude=exclude))


def _posix(rel: str) -> str:
    return rel.replace(os.sep, "/")


def _unique_name(name: str, seen: set[str]) -> str:
    candidate, k = name, 1
    while candidate.lower() in seen:
        k += 1
        candidate = f"{name}_{k}"
    seen.add(candidate.lower())
    return candidate


def _expand(source: str, stdin: TextIO | None) -> Iterator[tuple[str, str]]:
    """(path, rel_path) pairs for one SOURCE argument."""
    if source == "-":
        yield from _expand_list_lines(stdin if stdin is not None else sys.stdin, Path.cwd(), "stdin")
        return
    path = Path(source)
    if path.is_dir():
        yield from _walk_folder(path, rel_prefix="", what=f"folder {source}")
    elif path.is_file():
        if path.suffix.lower() == LIST_EXTENSION:
            try:
                with open(path, encoding="utf-8-sig") as f:
                    yield from _expand_list_lines(f, path.parent, f"list file {source}")
            except (OSError, UnicodeDecodeError) as e:
                raise SourceError(f"cannot read the list file {source}: {e}") from None
        else:
            yield str(path), path.name
    elif _GLOB_CHARS & set(source):
        yield from _expand_glob(source)
    elif path.exists():
        raise SourceError(f"{source} is neither a file nor a folder")
    else:
        raise SourceError(f"source not found: {source} (give an image, video, folder, glob, .txt list or -)")


def _walk_folder(folder: Path, rel_prefix: str, what: str) -> Iterator[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if name.startswith(".") or not is_image(name):
                continue
            rel = name if rel_root == "." else f"{_posix(rel_root)}/{name}"
            found.append((rel, os.path.join(root, name)))
    if not found:
        raise SourceError(
            f"{what} contains no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)"
        )
    for rel, path in sorted(found):
        yield path, f"{rel_prefix}{rel}"


def _glob_base(pattern: str) -> str:
    base = list(itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), Path(pattern).parts[:-1]))
    return str(Path(*base)) if base else ""


def _expand_glob(pattern: str) -> Iterator[tuple[str, str]]:
    base = _glob_base(pattern)
    matches = sorted(
        p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p) and (is_image(p) or is_video(p))
    )
    if not matches:
        raise SourceError(f"no image or video files match the pattern {pattern}")
    for p in matches:
        yield p, os.path.relpath(p, base) if base else p


def _expand_list_lines(lines: Iterable[str], base: Path, what: str) -> Iterator[tuple[str, str]]:
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry)
        path = p if p.is_absolute() else base / p
        rel = p.name if p.is_absolute() else _posix(os.path.normpath(entry))
        if path.is_dir():
            yield from _walk_folder(path, rel_prefix=f"{rel}/", what=f"folder {entry} (listed in {what})")
        else:
            yield str(path), rel


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of a video; raises `SourceError` if OpenCV cannot open it."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SourceError(f"cannot open the video {path} (missing, corrupt, or a codec OpenCV lacks)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if count <= 0:  # the container does not say: count by decoding
            count = 0
            while cap.grab():
                count += 1
    finally:
        cap.release()
    if not 0 < fps <= 1000:  # also NaN
        fps = 30.0
    return VideoInfo(frame_count=count, fps=fps, width=width, height=height)


def read_frames(
    path: str | os.PathLike, stride: int = 1, frame_count: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video in order, yielding `(frame_index, RGB uint8 [H, W, 3])` for frames 0, stride, ...

    Stops at `frame_count` (default: `video_info(path).frame_count`, the count ids were assigned for) or where
    the file ends. Skipped frames are grabbed, not converted. `SourceError` if the video cannot be opened.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if frame_count is None:
        frame_count = video_info(path).frame_count
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SourceError(f"cannot open the video {path} (missing, corrupt, or a codec OpenCV lacks)")
        for index in range(frame_count):
            if index % stride:
                if not cap.grab():
                    return
                continue
            ok, bgr = cap.read()
            if not ok:
                return
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
