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
