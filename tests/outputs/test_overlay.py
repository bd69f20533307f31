"""OverlayWriter: drawn JPEGs for images, an mp4 per video at the source fps, colours by track id."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.overlay import OverlayWriter, draw_detections, instance_color
from mrseg.outputs.records import instance_records


def test_draw_changes_masked_pixels_only(classes):
    mask = np.zeros((1, 200, 200), np.uint8)
    cv2.circle(mask[0], (100, 100), 40, 1, -1)
    det = Detections(
        width=200, height=200, boxes=np.array([[60, 60, 141, 141]], np.float32),
        scores=np.array([0.5], np.float32), labels=np.array([2]), masks=mask.astype(bool),
    )  # fmt: skip
    image = np.full((200, 200, 3), 128, np.uint8)
    drawn = draw_detections(image, det, instance_records(det, classes))
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not np.shares_memory(drawn, image) and (image == 128).all()
    color = np.array(instance_color(det, 0))
    expected = (128 * 0.55 + color * 0.45).astype(np.uint8)
    interior = drawn[90:110, 90:110].reshape(-1, 3)  # away from the outline, the box and the label
    assert np.abs(interior.astype(int) - expected).max() <= 1
    assert (drawn[150:, :] == 128).all() and (drawn[:, :55] == 128).all()  # outside: untouched
    assert (drawn[60, 70:130] == color).all()  # the box's top edge


def test_colours_follow_tracks_then_classes(make_dets):
    det = make_dets(track=True)
    same_track = make_dets(track=True)
    same_track.labels = np.array([3, 1, 2])
    assert [instance_color(det, i) for i in range(3)] == [instance_color(same_track, i) for i in range(3)]
    untracked = make_dets()
    assert instance_color(untracked, 0) != instance_color(untracked, 1)


def test_image_overlay_written(tmp_path, detections, classes):
    writer = OverlayWriter(tmp_path)
    image = np.full((60, 80, 3), 50, np.uint8)
    writer.write(InputItem(id=1, path="a.png", rel_path="d/a.png"), image, detections, [])
    writer.close()
    got = cv2.imread(str(tmp_path / "overlay" / "d" / "a.jpg"))
    assert got.shape == (60, 80, 3)
    with pytest.raises(ValueError, match="needs the pixels"):
        writer.write(InputItem(id=2, path="b.png", rel_path="b.png"), None, detections, [])


def test_video_overlay(tmp_path, make_dets, classes):
    det = make_dets(track=True)
    writer = OverlayWriter(tmp_path, vid_stride=2)
    for k in range(5):
        frame = np.full((60, 80, 3), 30 * k, np.uint8)
        item = InputItem(
            id=k + 1, path="clip.mp4", rel_path=f"clip/{2 * k:06d}.jpg", frame=2 * k, video="clip.mp4",
            fps=20.0, name=f"clip/{2 * k:06d}",
        )  # fmt: skip
        writer.write(item, frame, det, instance_records(det, classes))
    out = tmp_path / "overlay" / "clip.mp4"
    assert not out.exists()  # still being written under a temporary name
    writer.close()
    assert [p.name for p in (tmp_path / "overlay").iterdir()] == ["clip.mp4"]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)  # 20 fps source, every 2nd frame
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (60, 80, 3)


def _colour(k: int) -> np.ndarray:
    """A distinct flat RGB colour per frame index, far apart after mp4v compression."""
    return np.array([(37 * k) % 256, 255 - (53 * k) % 256, (101 * k + 60) % 256], np.uint8)


def _frame_item(k: int) -> InputItem:
    return InputItem(
        id=100 + k, path="/data/sub/clip.mp4", rel_path=f"sub/clip/{k:06d}.jpg", frame=k,
        video="sub/clip.mp4", fps=12.0, name=f"sub/clip/{k:06d}",
    )  # fmt: skip


def _write_frames(writer: OverlayWriter, frames) -> None:
    for k in frames:
        writer.write(_frame_item(k), np.tile(_colour(k), (60, 80, 1)), Detections(width=80, height=60), [])


def _frame_indices(path) -> list[int]:
    """Which frame each frame of the video shows, by its colour (nearest of the 20 frame colours)."""
    palette = np.stack([_colour(k) for k in range(20)]).astype(float)
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        mean = bgr[..., ::-1].reshape(-1, 3).mean(0)
        dist = np.abs(palette - mean).max(1)
        assert dist.min() < 12, f"frame {len(out)} has no frame colour: {mean}"
        out.append(int(dist.argmin()))
    cap.release()
    return out


def _journal(tmp_path, frames):
    from mrseg.outputs.records import record_line

    path = tmp_path / ".mrseg" / "records-0.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    det = Detections(width=80, height=60)
    path.write_text("".join(record_line(_frame_item(k), det, []) for k in frames), encoding="utf-8")
    return [path]


def test_resumed_video_keeps_the_earlier_frames(tmp_path):
    from mrseg.outputs import finalize

    first = OverlayWriter(tmp_path)
    _write_frames(first, range(5))
    first.close()  # an interrupted run: what it has is already a playable video
    out = tmp_path / "overlay" / "sub" / "clip.mp4"
    assert _frame_indices(out) == [0, 1, 2, 3, 4]
    resumed = OverlayWriter(tmp_path)
    _write_frames(resumed, range(5, 10))
    resumed.close()
    assert _frame_indices(out) == list(range(10))
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    cap.release()
    finalize(tmp_path, ["overlay"], _journal(tmp_path, range(10)), [])
    assert _frame_indices(out) == list(range(10))
    assert not (tmp_path / ".mrseg" / "overlay").exists()  # segments removed at the end of the run
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]


def test_killed_run_loses_only_its_own_segment_and_finalize_says_so(tmp_path):
    from mrseg.outputs import finalize

    killed = OverlayWriter(tmp_path)
    _write_frames(killed, range(4))
    del killed  # never closed, as when the process is killed: its segment stays a temporary file
    first = OverlayWriter(tmp_path)
    _write_frames(first, range(4, 7))
    first.close()
    resumed = OverlayWriter(tmp_path)
    _write_frames(resumed, range(7, 9))
    resumed.close()
    out = tmp_path / "overlay" / "sub" / "clip.mp4"
    assert _frame_indices(out) == [4, 5, 6, 7, 8]
    with pytest.warns(UserWarning, match=r"sub/clip.mp4: 4 predicted frame\(s\) are missing"):
        finalize(tmp_path, ["overlay", "coco"], _journal(tmp_path, range(9)), [])
    assert _frame_indices(out) == [4, 5, 6, 7, 8]


def _clip_item(video: str, k: int) -> InputItem:
    return InputItem(
        id=k + (100 if video == "b" else 1), path=f"/data/{video}.mp4", rel_path=f"{video}/{k:06d}.jpg",
        frame=k, video=f"{video}.mp4", fps=12.0, name=f"{video}/{k:06d}",
    )  # fmt: skip


def _write_clip(writer: OverlayWriter, video: str, frames) -> None:
    for k in frames:
        writer.write(
            _clip_item(video, k), np.tile(_colour(k), (60, 80, 1)), Detections(width=80, height=60), []
        )


def test_end_video_commits_that_video_at_once_and_closes_its_encoder(tmp_path):
    """Issue 13.5: a video's overlay is final as soon as its last frame is written, not at the end of the run
    (a run over many videos holds one encoder at a time, and a kill keeps the videos already finished)."""
    writer = OverlayWriter(tmp_path)
    _write_clip(writer, "a", range(3))
    assert writer.open_videos == 1
    path = writer.end_video(_clip_item("a", 2))
    assert path == tmp_path / "overlay" / "a.mp4" and writer.open_videos == 0
    assert _frame_indices(path) == [0, 1, 2]  # complete and playable before the run ends
    before = path.stat().st_mtime_ns
    _write_clip(writer, "b", range(3, 5))
    assert writer.open_videos == 1
    del writer  # killed: b's segment was never committed, a is unaffected
    assert _frame_indices(path) == [0, 1, 2] and path.stat().st_mtime_ns == before
    assert not (tmp_path / "overlay" / "b.mp4").exists()
