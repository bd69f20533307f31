"""Sources: every SOURCE kind expands to stable, unique InputItems; bad sources get clear errors."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest

from mrseg.data.sources import SourceError, collect_items, read_frames, video_info


def _touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _make_video(path, n_frames: int = 7, size=(64, 48), fps: float = 12.0):
    """A small mp4 whose frame k is filled with grey level 20 * k (so frames can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for k in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 20 * k, np.uint8))
    writer.release()
    return path


def test_folder_recursive_sorted_with_rel_paths(tmp_path):
    root = tmp_path / "imgs"
    rels = ["b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", ".hidden.jpg", ".cache/e.jpg"]
    for rel in rels:
        _touch(root / rel)
    items = collect_items([str(root)])
    assert [i.rel_path for i in items] == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert [i.id for i in items] == [1, 2, 3, 4]
    assert [i.name for i in items] == ["a", "b", "sub/c", "sub/deeper/d"]
    assert all(os.path.isfile(i.path) and i.frame is None for i in items)
    # Stable across runs.
    assert collect_items([str(root)]) == items


def test_file_source_uses_basename(tmp_path):
    p = _touch(tmp_path / "deep" / "dir" / "photo 1.jpg")
    (item,) = collect_items([str(p)])
    assert item.rel_path == "photo 1.jpg" and item.path == str(p) and item.id == 1


def test_ids_follow_source_order(tmp_path):
    a = _touch(tmp_path / "z.jpg")
    folder = tmp_path / "f"
    _touch(folder / "2.jpg"), _touch(folder / "1.jpg")
    items = collect_items([str(a), str(folder)])
    assert [(i.id, i.rel_path) for i in items] == [(1, "z.jpg"), (2, "1.jpg"), (3, "2.jpg")]


def test_spaces_and_non_ascii_names(tmp_path):
    root = tmp_path / "Fotos März"
    _touch(root / "blüte 1.jpg")
    _touch(root / "写真" / "猫 2.png")
    items = collect_items([str(root)])
    assert [i.rel_path for i in items] == ["blüte 1.jpg", "写真/猫 2.png"]
    assert all(os.path.exists(i.path) for i in items)


def test_glob_relative_to_its_leading_folder(tmp_path):
    for rel in ["x/a.jpg", "x/y/b.jpg", "x/y/c.txt", "x/y/d.png"]:
        _touch(tmp_path / rel)
    items = collect_items([str(tmp_path / "x" / "**" / "*.jpg")])
    assert [i.rel_path for i in items] == ["a.jpg", "y/b.jpg"]
    items = collect_items([str(tmp_path / "x" / "y" / "*")])
    assert [i.rel_path for i in items] == ["b.jpg", "d.png"]
    with pytest.raises(SourceError, match="no image or video files match"):
        collect_items([str(tmp_path / "x" / "*.bmp")])


def test_file_with_glob_characters_in_its_name(tmp_path):
    p = _touch(tmp_path / "photo [1].jpg")
    assert collect_items([str(p)])[0].rel_path == "photo [1].jpg"


def test_list_file_relative_to_its_folder(tmp_path, monkeypatch):
    _touch(tmp_path / "data" / "imgs" / "a.jpg")
    _touch(tmp_path / "data" / "imgs" / "sub" / "b.jpg")
    _touch(tmp_path / "other" / "c.jpg")
    folder_entry = tmp_path / "data" / "more"
    _touch(folder_entry / "d.jpg")
    listing = tmp_path / "data" / "list.txt"
    absolute = tmp_path / "other" / "c.jpg"
    listing.write_text(
        f"\ufeff# comment\nimgs/a.jpg\n\n./imgs/sub/b.jpg\r\n{absolute}\n../other/c.jpg\nmore\nmissing.jpg\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path / "other")  # the list's own folder counts, not the working directory
    items = collect_items([str(listing)])
    rels = [i.rel_path for i in items]
    assert rels == ["imgs/a.jpg", "imgs/sub/b.jpg", "c.jpg", "more/d.jpg", "missing.jpg"]
    assert os.path.samefile(items[0].path, tmp_path / "data" / "imgs" / "a.jpg")
    # `../other/c.jpg` is the same file as the absolute entry: yielded once.
    assert sum(os.path.basename(i.path) == "c.jpg" for i in items) == 1
    # A missing entry is not an enumeration error: it fails when read (one failure, not the run).
    assert not os.path.exists(items[-1].path)


def test_stdin_paths(tmp_path, monkeypatch):
    _touch(tmp_path / "s p a c e.jpg")
    _touch(tmp_path / "ü.png")
    monkeypatch.chdir(tmp_path)
    items = collect_items(["-"], stdin=io.StringIO("s p a c e.jpg\nü.png\n"))
    assert [i.rel_path for i in items] == ["s p a c e.jpg", "ü.png"]
    assert all(os.path.exists(i.path) for i in items)


def test_duplicate_file_yielded_once_and_name_collisions_made_unique(tmp_path):
    a = _touch(tmp_path / "a" / "1.jpg")
    _touch(tmp_path / "b" / "1.jpg")
    _touch(tmp_path / "b" / "1.PNG")
    items = collect_items([str(a), str(tmp_path / "a"), str(tmp_path / "b")])
    assert [i.rel_path for i in items] == ["1.jpg", "1.PNG", "1.jpg"]
    names = [i.name for i in items]
    assert names == ["1", "1_2", "1_3"]
    assert len({n.lower() for n in names}) == len(names)


def test_exclude_skips_the_output_folder(tmp_path):
    _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "in" / "runs" / "predict" / "overlay" / "a.jpg")
    items = collect_items([str(tmp_path / "in")], exclude=[tmp_path / "in" / "runs"])
    assert [i.rel_path for i in items] == ["a.jpg"]


def test_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="source not found: .*nope"):
        collect_items([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "empty" / "readme.md")
    with pytest.raises(SourceError, match="contains no images"):
        collect_items([str(tmp_path / "empty")])
    with pytest.raises(SourceError, match="vid_stride"):
        collect_items([str(tmp_path)], vid_stride=0)


def test_video_frames_every_frame_and_stride(tmp_path):
    video = _make_video(tmp_path / "my clip.mp4", n_frames=7)
    info = video_info(video)
    assert info.frame_count == 7 and info.width == 64 and info.height == 48
    assert info.fps == pytest.approx(12.0)
    still = _touch(tmp_path / "still.jpg")

    items = collect_items([str(video), str(still)])
    assert [i.id for i in items] == list(range(1, 9))
    frames = items[:7]
    assert [i.frame for i in frames] == list(range(7))
    assert all(i.path == str(video) and i.video == "my clip.mp4" for i in frames)
    assert all(i.fps == pytest.approx(12.0) for i in frames)
    assert frames[3].rel_path == "my clip/000003.jpg" and frames[3].name == "my clip/000003"
    assert items[7].rel_path == "still.jpg" and items[7].frame is None

    strided = collect_items([str(video)], vid_stride=3)
    assert [(i.id, i.frame) for i in strided] == [(1, 0), (2, 3), (3, 6)]

    decoded = list(read_frames(video, stride=3))
    assert [k for k, _ in decoded] == [0, 3, 6]
    for k, rgb in decoded:
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        assert abs(float(rgb.mean()) - 20 * k) < 4  # the frame's own grey level, so the right frame


def test_video_in_glob_and_list(tmp_path):
    _make_video(tmp_path / "v" / "a.mp4", n_frames=2)
    items = collect_items([str(tmp_path / "v" / "*.mp4")])
    assert [i.rel_path for i in items] == ["a/000000.jpg", "a/000001.jpg"]
    (tmp_path / "list.txt").write_text("v/a.mp4\n")
    assert [i.frame for i in collect_items([str(tmp_path / "list.txt")])] == [0, 1]


def test_unreadable_video(tmp_path):
    bad = _touch(tmp_path / "broken.mp4", b"not a video")
    with pytest.raises(SourceError, match="cannot open the video .*broken.mp4"):
        collect_items([str(bad)])
