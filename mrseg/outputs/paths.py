"""Output paths derived from input names, made safe: nothing a file name says can escape the output folder.

Input names come from places the user may not control (a COCO list, stdin, a list file), so `../../etc/x.jpg`,
`/abs/x.jpg`, `C:\\x.jpg` or names with control characters must all land inside OUT. A file name holds at
most `NAME_MAX` (255) bytes, and the writers add a suffix (`.json`, `.parts`) and, while writing, a temporary
decoration; so every component longer than `MAX_COMPONENT_BYTES` is cut at a character boundary and given
`_` + 12 hex digits of its SHA-256 (`shorten_component`): stable across runs, and long names that share
their beginning stay apart.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from mrseg.outputs.detections import InputItem

# A run's state folder under OUT (journals, run.json, the lock, overlay segments); never an output of its own.
STATE_DIR = ".mrseg"

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")

NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, apfs, NTFS in UTF-16 units)
# Room left in every name for what the writers add: the longest suffix (".parts", ".json") and a temporary
# name's decoration (".", ".<pid>.<8 hex>.tmp": 22 bytes at most), with some to spare.
NAME_RESERVE = 48
MAX_COMPONENT_BYTES = NAME_MAX - NAME_RESERVE
_HASH_HEX = 12


class UnsafePathError(ValueError):
    """A derived output path would lie outside the output folder."""


def safe_relative_path(rel_path: str) -> str:
    """A posix relative path of `rel_path`'s harmless components: `/` and `\\` separate them; empty, `.`
    and `..` components, a leading drive (`C:`) and control characters are dropped (so it never starts with
    `/` nor climbs); `unnamed` when nothing is left."""
    text = _DRIVE.sub("", _UNSAFE_CHARS.sub("", rel_path))
    parts = [p.strip() for p in re.split(r"[/\\]+", text)]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(parts) if parts else "unnamed"


def name_bytes(name: str) -> int:
    """The length of `name` in bytes as the file system stores it (UTF-8); a lone surrogate counts 3 bytes
    (an over-estimate for the undecodable bytes that `os.fsdecode` maps to surrogates, which take 1)."""
    return len(name.encode("utf-8", "surrogatepass"))


def truncate_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` that is at most `limit` bytes (never cutting a character in two)."""
    if name_bytes(text) <= limit:
        return text
    size = 0
    for k, ch in enumerate(text):
        size += name_bytes(ch)
        if size > limit:
            return text[:k]
    return text


def shorten_component(name: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    """`name` when it is at most `limit` bytes; else its beginning + `_` + 12 hex digits of its SHA-256, in
    exactly `limit` bytes or fewer. Stable (the same name always gives the same result) and idempotent."""
    if name_bytes(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{truncate_bytes(name, limit - _HASH_HEX - 1)}_{digest}"


def shorten_path(rel_path: str) -> str:
    """`shorten_component` applied to every `/`-separated component of a posix relative path."""
    return "/".join(shorten_component(p) for p in rel_path.split("/"))


def output_stem(item: InputItem) -> str:
    """`item.name`, else its `rel_path` without extension, made safe and short (`MAX_COMPONENT_BYTES`)."""
    if item.name:
        return shorten_path(safe_relative_path(item.name))
    stem = str(PurePosixPath(safe_relative_path(item.rel_path)).with_suffix(""))
    return shorten_path(stem) if stem not in ("", ".") else "unnamed"


def output_path(out_dir: str | os.PathLike, *parts: str, suffix: str = "") -> Path:
    """`out_dir/part/.../part<suffix>` with every part sanitized and every component shortened to at most
    `MAX_COMPONENT_BYTES` (before `suffix`); raises `UnsafePathError` if it escapes."""
    root = Path(os.path.abspath(out_dir))
    rel = "/".join(shorten_path(safe_relative_path(p)) for p in parts) + suffix
    path = Path(os.path.normpath(root / rel))
    if os.path.commonpath([root, path]) != str(root) or path == root:
        raise UnsafePathError(f"output path {path} for {rel!r} lies outside the output folder {root}")
    return path
