"""Atomic file writes: a reader (or a crash) never sees a half-written output file."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mrseg.outputs.paths import NAME_MAX, name_bytes, truncate_bytes


def temp_sibling(path: str | os.PathLike, ext: str = ".tmp") -> Path:
    """A fresh hidden name beside `path` for writing it: `.<name>.<pid>.<8 hex><ext>`, the name cut short
    (at a character boundary) so that the whole stays within `NAME_MAX` bytes however long `path`'s name."""
    path = Path(path)
    tail = f".{os.getpid()}.{secrets.token_hex(4)}{ext}"
    return path.with_name("." + truncate_bytes(path.name, NAME_MAX - 1 - name_bytes(tail)) + tail)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = False
) -> Iterator[IO]:
    """Open a temporary file beside `path` (parent folders created) for writing ("w": text in `encoding`, or
    "wb"); a clean exit replaces `path` with it (os.replace), an exception removes it and leaves `path` as it
    was. `fsync`: on disk before the rename (worth it for the final files, too slow for one per image)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with "x" (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file that another library wrote (an OpenCV video) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> None:
    """Write `data` to `path` atomically (`fsync`: on disk before the rename)."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically (`fsync`: on disk before the rename)."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)
