"""Output paths derived from input names, made safe: nothing a file name says can escape the output folder.

Input names come from places the user may not control (a COCO list, stdin, a list file written elsewhere), so
`../../etc/x.jpg`, `/abs/x.jpg`, `C:\\x.jpg` or names with control characters must all land inside OUT.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from mrseg.outputs.detections import InputItem

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A derived output path would lie outside the output folder."""


def safe_relative_path(rel_path: str) -> str:
    """A posix relative path made of `rel_path`'s harmless components.

    Both `/` and `\\` separate components; empty, `.` and `..` components, a leading drive (`C:`) and control
    characters are dropped, so the result never starts with `/` and never climbs. An empty result becomes
    `unnamed`.
    """
    text = _DRIVE.sub("", _UNSAFE_CHARS.sub("", rel_path))
    parts = [p.strip() for p in re.split(r"[/\\]+", text)]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(parts) if parts else "unnamed"


def output_stem(item: InputItem) -> str:
    """The output stem for an item: `item.name` when set, else its `rel_path` without extension, made safe."""
    if item.name:
        return safe_relative_path(item.name)
    stem = str(PurePosixPath(safe_relative_path(item.rel_path)).with_suffix(""))
    return stem if stem not in ("", ".") else "unnamed"


def output_path(out_dir: str | os.PathLike, *parts: str, suffix: str = "") -> Path:
    """`out_dir/part/.../part<suffix>` with every part sanitized; raises `UnsafePathError` if it escapes."""
    root = Path(os.path.abspath(out_dir))
    rel = "/".join(safe_relative_path(p) for p in parts) + suffix
    path = Path(os.path.normpath(root / rel))
    if os.path.commonpath([root, path]) != str(root) or path == root:
        raise UnsafePathError(f"output path {path} for {rel!r} lies outside the output folder {root}")
    return path
