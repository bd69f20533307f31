"""batches.py: the DataLoaders of predict group inputs into batches of `--batch` in input order whatever the
worker count, decode images to the pixels written (PNG, lossless) and video frames to what OpenCV reads, and
turn an input that can't be read into a `Loaded` with its reason instead of an exception."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mrseg.data.sources import collect_items
from mrseg.engine.predict.batches import Loaded, VideoFrames, image_loader, video_loader
from mrseg.outputs.detections import InputItem
from tests.engine.conftest import write_moving_box_video


@pytest.fixture()
def pictures(tmp_path) -> dict[str, np.ndarray]:
    """Seven small PNGs of random RGB pixels (PIL writes them), by file name."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    out = {}
    for k in range(7):
        rgb = rng.integers(0, 256, (10 + k, 14 + 2 * k, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"{k}.png")
        out[f"{k}.png"] = rgb
    return out


def items_of(tmp_path) -> list[InputItem]:
    return collect_items([str(tmp_path / "pictures")])


@pytest.mark.parametrize("workers", [0, 2])
def test_images_come_in_batches_in_input_order_with_their_pixels(tmp_path, pictures, workers):
    items = items_of(tmp_path)
    batches = list(image_loader(items, batch=3, workers=workers, pin=False, max_pixels=None))
    assert [len(b) for b in batches] == [3, 3, 1]
    loaded = [x for b in batches for x in b]
    assert all(isinstance(x, Loaded) and x.error is None for x in loaded)
    assert [x.item for x in loaded] == items
    for x in loaded:
        assert x.image.dtype == torch.uint8
        np.testing.assert_array_equal(x.image.numpy(), pictures[x.item.rel_path])


def test_an_unreadable_image_is_an_error_in_its_place_and_the_rest_are_read(tmp_path, pictures):
    folder = tmp_path / "pictures"
    (folder / "2.png").write_bytes((folder / "2.png").read_bytes()[:60])  # truncated
    (folder / "4.png").write_text("not an image")
    items = items_of(tmp_path)
    items.append(InputItem(id=99, path=str(folder / "gone.png"), rel_path="gone.png", name="gone"))
    loaded = [x for b in image_loader(items, batch=4, workers=0, pin=False, max_pixels=None) for x in b]
    assert [x.item.id for x in loaded] == [it.id for it in items]
    bad = {x.item.rel_path: x.error for x in loaded if x.error is not None}
    assert set(bad) == {"2.png", "4.png", "gone.png"}
    assert all(str(folder / name) in reason for name, reason in bad.items())
    assert "file not found" in bad["gone.png"]
    assert all(x.image is None for x in loaded if x.error is not None)
    for x in loaded:
        if x.error is None:
            np.testing.assert_array_equal(x.image.numpy(), pictures[x.item.rel_path])


def test_an_image_over_max_pixels_is_refused_and_none_lifts_the_limit(tmp_path, pictures):
    items = items_of(tmp_path)  # the largest is 26x16 = 416 pixels
    loaded = [x for b in image_loader(items, batch=7, workers=0, pin=False, max_pixels=300) for x in b]
    refused = [x for x in loaded if x.error is not None]
    assert refused and all("over the limit of 300" in x.error for x in refused)
    assert all(np.prod(pictures[x.item.rel_path].shape[:2]) > 300 for x in refused)
    assert all(np.prod(x.image.shape[:2]) <= 300 for x in loaded if x.error is None)


def make_video(path, n_frames: int = 7):
    """A 32x24 mp4v clip of a box moving 3 px a frame (frames can be told apart)."""
    return write_moving_box_video(path, frames=n_frames, size=(32, 24), box=(2, 4, 12, 14), step=3)


def opencv_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_a_videos_wanted_frames_come_in_order_as_opencv_reads_them(tmp_path, stride):
    video = make_video(tmp_path / "clip.mp4")
    reference = opencv_frames(video)
    assert len(reference) == 7
    items = collect_items([str(video)], vid_stride=stride)
    loaded = list(VideoFrames(items, stride))
    assert [x.item for x in loaded] == items and [it.frame for it in items] == list(range(0, 7, stride))
    for x in loaded:
        assert x.error is None
        np.testing.assert_array_equal(x.image.numpy(), reference[x.item.frame])


def test_a_resumed_video_yields_only_its_frames_still_to_do(tmp_path):
    video = make_video(tmp_path / "clip.mp4")
    reference = opencv_frames(video)
    items = collect_items([str(video)], vid_stride=2)[2:]  # frames 0 and 2 were done before
    loaded = list(VideoFrames(items, 2))
    assert [x.item.frame for x in loaded] == [4, 6]
    for x in loaded:
        np.testing.assert_array_equal(x.image.numpy(), reference[x.item.frame])


def test_frames_the_video_lacks_are_errors_after_the_frames_it_has(tmp_path):
    video = make_video(tmp_path / "clip.mp4", n_frames=4)
    items = collect_items([str(video)])
    items.insert(2, InputItem(id=50, path=str(video), rel_path="clip/000009.jpg", frame=9, video="clip.mp4"))
    loaded = list(VideoFrames(items))
    assert [(x.item.frame, x.error is None) for x in loaded] == [(0, True), (1, True), (2, True), (3, True),
                                                                 (9, False)]  # fmt: skip
    assert loaded[-1].error == f"{video} frame 9: the video ended before this frame"


def test_a_video_that_cannot_be_opened_makes_each_frame_an_error(tmp_path):
    fake = tmp_path / "broken.mp4"
    fake.write_text("not a video")
    items = [InputItem(id=i, path=str(fake), rel_path=f"broken/{f:06d}.jpg", frame=f, video="broken.mp4")
             for i, f in enumerate((0, 1, 2))]  # fmt: skip
    loaded = list(VideoFrames(items))
    assert [x.item.frame for x in loaded] == [0, 1, 2]
    assert all(x.image is None and x.error.startswith(f"{fake} frame ") and "cannot open" in x.error
               for x in loaded)  # fmt: skip


@pytest.mark.parametrize("workers", [0, 3])
def test_video_frames_come_in_batches_in_order_from_one_worker_at_most(tmp_path, workers):
    video = make_video(tmp_path / "clip.mp4")
    items = collect_items([str(video)])
    loader = video_loader(items, batch=3, workers=workers, pin=False, vid_stride=1)
    assert loader.num_workers == min(1, workers)  # frames are decoded in order, by one reader
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [x.item for b in batches for x in b] == items


def test_pin_memory_pins_the_pixels_and_passes_errors_through():
    failed = Loaded(InputItem(id=1, path="a.png", rel_path="a.png"), error="bad")
    assert failed.pin_memory() is failed and failed.image is None
    if not torch.cuda.is_available():
        pytest.skip("pinning memory needs an accelerator")
    pixels = torch.zeros(4, 4, 3, dtype=torch.uint8)
    ok = Loaded(InputItem(id=2, path="b.png", rel_path="b.png"), image=pixels)
    assert ok.pin_memory().image.is_pinned()
