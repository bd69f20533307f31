"""`Predictor.stream`: inputs in, `(item, Detections | Failure)` out, one per input and in input order.
Each video is read in order by one worker and its frames get track ids (`Tracker`); one bad input never stops
the stream."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrseg.engine.predict.batches import Loaded, image_loader, video_loader
from mrseg.engine.predict.oom import InferenceOutOfMemory
from mrseg.engine.predict.tracker import Tracker
from mrseg.outputs.detections import Detections, InputItem

if TYPE_CHECKING:
    from mrseg.engine.predict.predictor import Predictor


@dataclass(frozen=True)
class Failure:
    """Why an input has no detections: it could not be read or decoded, or it ran out of memory."""

    reason: str


# (tracker, video path relative to its SOURCE) -> None: continues a video's tracks (e.g. on --resume)
TrackerSeed = Callable[[Tracker, "str | None"], None]


def group_units(items: Sequence[InputItem]) -> list[list[InputItem]]:
    """Consecutive frames of one video form one unit (they must stay together and in order); every image is a
    unit of its own. The unit is what sharding deals out."""
    units: list[list[InputItem]] = []
    for it in items:
        if it.frame is not None and units and units[-1][0].frame is not None and units[-1][0].path == it.path:
            units[-1].append(it)
        else:
            units.append([it])
    return units


def _segments(units: list[list[InputItem]]) -> Iterator[tuple[bool, list[InputItem]]]:
    """Runs of image units merged into one list (one DataLoader), each video on its own: (is_video, items)."""
    for is_video, group in itertools.groupby(units, key=lambda unit: unit[0].frame is not None):
        if is_video:
            yield from ((True, unit) for unit in group)
        else:
            yield False, [it for unit in group for it in unit]


def stream_predictions(
    predictor: Predictor, items: Sequence[InputItem], *, batch: int, workers: int, vid_stride: int,
    max_pixels: int | None, keep_images: bool | str, seed_tracker: TrackerSeed | None = None,
    on_video_end: Callable[[InputItem], None] | None = None,
) -> Iterator[tuple[InputItem, Detections | Failure]]:  # fmt: skip
    """See `Predictor.stream`; `items` are already listed (ids assigned)."""
    pin = predictor.device.type == "cuda"
    for is_video, seg in _segments(group_units(items)):
        tracker = None
        if is_video:
            tracker = Tracker()
            if seed_tracker is not None:
                seed_tracker(tracker, seg[0].video)
            loader = video_loader(seg, batch=batch, workers=workers, pin=pin, vid_stride=vid_stride)
        else:
            loader = image_loader(seg, batch=batch, workers=workers, pin=pin, max_pixels=max_pixels)
        for loaded in loader:
            keep = keep_images is True or (is_video and keep_images == "frames")
            yield from _predict_loaded(loaded, predictor, tracker, keep)
        if is_video and on_video_end is not None:  # before the next input is even decoded
            on_video_end(seg[-1])


def _predict_loaded(
    loaded: list[Loaded], predictor: Predictor, tracker: Tracker | None, keep_images: bool
) -> Iterator[tuple[InputItem, Detections | Failure]]:
    good = [x for x in loaded if x.error is None]
    try:
        dets = predictor.infer([x.image for x in good]) if good else []
    except InferenceOutOfMemory as e:  # some images ran out of memory every way: they fail, the rest go on
        if e.results is None:
            raise
        dets = e.results  # Detections, or why (str)
    by_id = {id(x): d for x, d in zip(good, dets, strict=True)}
    for x in loaded:  # in input order
        det = by_id.get(id(x), x.error)
        if isinstance(det, str):
            yield x.item, Failure(det)
            continue
        if tracker is not None:
            det.track_ids = tracker.update(det.boxes, det.labels, det.masks)
        if keep_images:
            det.image = x.image.numpy()
        yield x.item, det
