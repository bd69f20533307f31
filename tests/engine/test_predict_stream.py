"""`Predictor.stream`: every input once, in input order, as Detections (the same as predicting it alone) or a
Failure with the reason; video frames tracked; the decoded image only when asked for."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrseg.data.images import read_image
from mrseg.engine.predict_stream import Failure, group_units
from mrseg.engine.predictor import Predictor
from mrseg.outputs.detections import Detections, InputItem
from tests.engine.conftest import write_moving_box_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _video(path, frames=5, size=(120, 90)):
    return write_moving_box_video(path, frames=frames, size=size, box=(10, 20, 50, 70), step=6)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_yields_every_input_in_order(tiny_model, tiny_classes, nuts_images, tmp_path, workers):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, src in enumerate(nuts_images[:3]):
        image = cv2.resize(cv2.imread(str(src)), (160, 120))
        cv2.imwrite(str(folder / f"a{k}.jpg"), image)
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    clip = _video(tmp_path / "clip.mp4")
    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=2)

    ended, results = [], []
    on_end = lambda item: ended.append((item.frame, len(results)))  # noqa: E731
    sources = [str(clip), str(folder)]
    for pair in predictor.stream(sources, workers=workers, keep_images=True, on_video_end=on_end):
        results.append(pair)
    items = [item for item, _ in results]
    assert [it.id for it in items] == list(range(1, len(items) + 1))
    assert [it.frame for it in items[:5]] == [0, 1, 2, 3, 4]
    assert ended == [(4, 5)]  # once, after the clip's last frame was yielded and before the next input
    assert [it.rel_path for it in items[5:]] == ["a0.jpg", "a1.jpg", "a2.jpg", "b_broken.jpg"]

    broken = results[-1][1]
    assert isinstance(broken, Failure) and "b_broken.jpg" in broken.reason
    for item, det in results[5:8]:
        alone = predictor(read_image(item.path))
        assert isinstance(det, Detections) and det.track_ids is None
        np.testing.assert_array_equal(det.image, read_image(item.path))
        np.testing.assert_allclose(det.boxes, alone.boxes, atol=1e-4)
        np.testing.assert_array_equal(det.labels, alone.labels)
    frames = [det for _, det in results[:5]]
    assert all(isinstance(d, Detections) and d.track_ids is not None for d in frames)
    assert sum(len(d) for d in frames) > 0
    ids = [set(d.track_ids.tolist()) for d in frames if len(d)]
    assert ids[0] & ids[-1], "the moving box keeps a track id across the clip"

    # without keep_images no pixels are held; InputItems are accepted as they are
    again = list(predictor.stream(items[5:7], workers=0))
    assert [it for it, _ in again] == items[5:7] and all(d.image is None for _, d in again)


def test_stream_raises_at_once_for_sources_that_are_not_there(tiny_model, tiny_classes, tmp_path):
    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu")
    with pytest.raises(ValueError, match="nothing.jpg"):
        list(predictor.stream([str(tmp_path / "nothing.jpg")]))


def test_group_units_keeps_a_videos_consecutive_frames_together():
    def frame(i, path, f):
        return InputItem(id=i, path=path, rel_path=f"{path}/{f}", frame=f)

    image = InputItem(id=1, path="a.jpg", rel_path="a.jpg")
    units = group_units([image, frame(2, "v.mp4", 0), frame(3, "v.mp4", 1), frame(4, "w.mp4", 0), image])
    assert [[it.id for it in u] for u in units] == [[1], [2, 3], [4], [1]]
