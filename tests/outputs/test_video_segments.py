"""Overlay video segments: numbered per run, joined in frame order (latest segment wins a redone frame),
published atomically, built by finalize when a run stopped before joining them."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from mrseg.outputs.video_segments import (
    SegmentWriter,
    assemble,
    committed_segments,
    final_path,
    finish_videos,
    is_assembled,
    parts_dir,
)

W, H = 64, 48


def _bgr(value: int) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def _segment(parts, frames, shade, size=(W, H)):
    seg = SegmentWriter(parts, 10.0, size)
    for f in frames:
        seg.write(_bgr(shade(f)), f, 1000 + f)
    return seg


def _read(path) -> list[float]:
    cap = cv2.VideoCapture(str(path))
    means = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (H, W, 3)
        means.append(float(frame.mean()))
    cap.release()
    return means


def test_segments_numbered_and_published_with_manifests(tmp_path):
    parts = parts_dir(tmp_path, "a/clip")
    assert final_path(tmp_path, parts) == tmp_path / "overlay" / "a" / "clip.mp4"
    first = _segment(parts, [0, 1, 2], lambda f: 10 * f)
    assert committed_segments(parts) == []  # nothing visible before commit
    assert first.commit() == parts / "part-0001.mp4"
    second = _segment(parts, [3, 4], lambda f: 10 * f)
    assert second.number == 2
    second.commit()
    names = sorted(p.name for p in parts.iterdir())
    assert names == ["part-0001.json", "part-0001.mp4", "part-0002.json", "part-0002.mp4"]
    meta = json.loads((parts / "part-0002.json").read_text())
    assert meta == {"fps": 10.0, "size": [W, H], "frames": [3, 4], "ids": [1003, 1004]}
    empty = SegmentWriter(parts, 10.0, (W, H))
    assert empty.commit() is None and len(list(parts.iterdir())) == 4


def test_join_in_frame_order_latest_segment_wins(tmp_path):
    parts = parts_dir(tmp_path, "clip")
    _segment(parts, range(0, 7), lambda f: 20 + 20 * f).commit()
    _segment(parts, range(5, 10), lambda f: 255 - 10 * f).commit()  # 5 and 6 redone, in other shades
    dst = tmp_path / "overlay" / "clip.mp4"
    assert assemble(parts, dst) == 10
    want = [20 + 20 * f for f in range(5)] + [255 - 10 * f for f in range(5, 10)]
    assert np.abs(np.array(_read(dst)) - want).max() < 10  # mp4v (twice) is not exact
    assert is_assembled(tmp_path, parts)
    _segment(parts, [10], lambda f: 250).commit()
    assert not is_assembled(tmp_path, parts)
    assert sorted(os.listdir(dst.parent)) == ["clip.mp4"]  # no temporary file left


def test_single_segment_is_published_as_is(tmp_path):
    parts = parts_dir(tmp_path, "clip")
    seg = _segment(parts, range(3), lambda f: 60 * f)
    video = seg.commit()
    dst = tmp_path / "overlay" / "clip.mp4"
    assert assemble(parts, dst) == 3
    assert dst.read_bytes() == video.read_bytes()  # no re-encoding


def test_finish_builds_what_close_did_not_and_cleans_up(tmp_path):
    parts = parts_dir(tmp_path, "v")
    _segment(parts, range(3), lambda f: 40 * f + 20).commit()
    _segment(parts, range(3, 5), lambda f: 40 * f + 20).commit()  # committed, never joined (close failed)
    (parts / ".part-0003.999.tmp.mp4").write_bytes(b"half a video")  # a killed run's segment
    (parts / "part-0004.json").write_text("{broken")  # unreadable manifest: skipped, with a warning
    (parts / "part-0004.mp4").write_bytes(b"")
    records = [{"image": {"id": 1000 + f, "file_name": f"v/{f:06d}.jpg", "video": "v.mp4", "frame": f}}
               for f in range(5)]  # fmt: skip
    with pytest.warns(UserWarning, match="unreadable manifest"):
        built = finish_videos(tmp_path, records)
    dst = tmp_path / "overlay" / "v.mp4"
    assert built == {dst: 5}
    assert np.abs(np.array(_read(dst)) - [20, 60, 100, 140, 180]).max() < 10
    assert not (tmp_path / ".mrseg" / "overlay").exists()
    assert finish_videos(tmp_path, records) == {}  # nothing left to do


def test_unreadable_segment_is_a_clear_error_and_keeps_the_old_video(tmp_path):
    parts = parts_dir(tmp_path, "v")
    _segment(parts, range(2), lambda f: 50).commit()
    dst = tmp_path / "overlay" / "v.mp4"
    assemble(parts, dst)
    before = dst.read_bytes()
    broken = _segment(parts, range(2, 4), lambda f: 90).commit()
    broken.write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match="cannot read frame 0 of the segment .*part-0002.mp4"):
        assemble(parts, dst)
    assert dst.read_bytes() == before
    assert sorted(os.listdir(dst.parent)) == ["v.mp4"]
