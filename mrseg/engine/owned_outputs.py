"""The per-item files a predict run owns, so that a fresh `--exist-ok` run can remove exactly those.

A fresh start lists, in `OUT/.mrseg/owned.txt` (one path relative to OUT per line), every file its formats
write for its inputs: `labelme/<name>.json`, `yolo/labels/<name>.txt`, `yolo/images/<name><ext>` (a link to
the input, never the input itself), `yolo/data.yaml`, `overlay/<name>.jpg` and `overlay/<video>.mp4`. The
next fresh `--exist-ok` run in that folder deletes the files of that list (those that exist) and then the
folders they leave empty; any other file (the user's) stays where it is, and so does any folder still
holding one. A run of an mrseg version without the list leaves its files in place (with a note).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mrseg.outputs.detections import InputItem

OWNED_FILE = "owned.txt"
PER_ITEM_FORMATS = ("labelme", "yolo", "overlay")


def owned_paths(out_dir: Path, items: Sequence[InputItem], formats: Iterable[str]) -> list[str]:
    """Sorted paths (relative to `out_dir`, posix) of the files the per-item `formats` write for `items`."""
    from mrseg.outputs import LabelmeWriter, OverlayWriter, YoloWriter
    from mrseg.outputs.paths import UnsafePathError
    from mrseg.outputs.yolo import YOLO_DIR

    formats = set(formats)
    getters = []
    if "labelme" in formats:
        getters.append(LabelmeWriter(out_dir).path_for)
    if "yolo" in formats:
        yolo = YoloWriter(out_dir)
        getters += [yolo.path_for, yolo.image_path_for]
    if "overlay" in formats:
        getters.append(OverlayWriter(out_dir).path_for)
    root = Path(os.path.abspath(out_dir))
    found = {f"{YOLO_DIR}/data.yaml"} if "yolo" in formats else set()
    for item in items:
        for get in getters:
            try:
                path = get(item)
            except UnsafePathError:
                continue
            if path is not None:
                found.add(Path(os.path.abspath(path)).relative_to(root).as_posix())
    return sorted(found)


def write_owned(state_dir: Path, paths: Sequence[str]) -> None:
    from mrseg.engine.journal import write_text_atomic

    write_text_atomic(state_dir / OWNED_FILE, "".join(p + "\n" for p in paths))


def remove_owned(out_dir: Path, state_dir: Path) -> tuple[int, bool]:
    """Delete the files listed in `state_dir/owned.txt` (paths inside `out_dir` only) and the folders that
    leaves empty. Returns (files removed, whether a list was found)."""
    listing = state_dir / OWNED_FILE
    if not listing.is_file():
        return 0, False
    root = Path(os.path.abspath(out_dir))
    removed, parents = 0, set()
    for line in listing.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("/") or ".." in Path(line).parts:
            continue
        path = root / line
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed += 1
            parents.update(p for p in path.parents if root in p.parents)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):  # deepest first
        try:
            folder.rmdir()  # only when empty: a user's file keeps its folder
        except OSError:
            pass
    return removed, True
