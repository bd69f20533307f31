"""Atomic writes: readers see the old file or the new one, never a partial one; no temp files left over."""

from __future__ import annotations

import os
import stat

import pytest

from mrseg.outputs.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two ü")
    assert target.read_text(encoding="utf-8") == "two ü"
    assert os.listdir(target.parent) == ["f.json"]
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_failure_keeps_old_content(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half of the new")
            assert target.read_text() == "old"  # not visible while writing
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_permissions_follow_umask(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "x")
    mode = stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "a"):
            pass
