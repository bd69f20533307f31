"""Decoding inputs off the main process: DataLoaders over image files and over one video's frames.

A file that can't be decoded becomes a `Loaded` with `error` set instead of an exception, so one bad
image never stops the loader. A video is read in order by a single worker (frames can't be split).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mrseg.outputs.detections import InputItem


@dataclass
class Loaded:
    """One decoded input: `image` uint8 [H, W, 3] RGB, or `error` (why it could not be read)."""

    item: InputItem
    image: torch.Tensor | None = None
    error: str | None = None

    def pin_memory(self) -> Loaded:  # called by DataLoader(pin_memory=True)
        if self.image is not None:
            self.image = self.image.pin_memory()
        return self


def _read(item: InputItem, max_pixels: int | None) -> Loaded:
    from mrseg.data.images import read_image

    try:
        image = read_image(item.path) if max_pixels is None else read_image(item.path, max_pixels=max_pixels)
    except (ValueError, OSError, MemoryError) as e:  # ImageReadError is a ValueError
        return Loaded(item, error=str(e) or type(e).__name__)
    return Loaded(item, image=torch.from_numpy(image))


class ImageFiles(Dataset):
    """Map-style dataset over image items; the DataLoader keeps their order whatever the worker count."""

    def __init__(self, items: list[InputItem], max_pixels: int | None = None):
        self.items = items
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Loaded:
        return _read(self.items[i], self.max_pixels)


class VideoFrames(IterableDataset):
    """The wanted frames (`items`, still to do) of one video, in order; frames the video turns out not to
    have (or that fail to decode) come back as errors."""

    def __init__(self, items: list[InputItem], vid_stride: int = 1):
        self.items = items
        self.vid_stride = vid_stride

    def __iter__(self) -> Iterator[Loaded]:
        from mrseg.data.sources import read_frames

        wanted = {it.frame: it for it in self.items}
        last = max(wanted) if wanted else -1
        try:
            for frame_index, rgb in read_frames(self.items[0].path, self.vid_stride):
                item = wanted.pop(frame_index, None)
                if item is not None:
                    yield Loaded(item, image=torch.from_numpy(rgb))
                if frame_index >= last:
                    break
            reason = "the video ended before this frame"
        except (ValueError, OSError) as e:
            reason = str(e)
        for frame_index in sorted(wanted):
            yield Loaded(wanted[frame_index], error=f"{self.items[0].path} frame {frame_index}: {reason}")


def _as_list(batch: list[Loaded]) -> list[Loaded]:
    return batch


def image_loader(items: list[InputItem], *, batch: int, workers: int, pin: bool, max_pixels: int | None):
    return DataLoader(
        ImageFiles(items, max_pixels),
        batch_size=batch,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=pin,
        prefetch_factor=2 if workers > 0 else None,
    )


def video_loader(items: list[InputItem], *, batch: int, workers: int, pin: bool, vid_stride: int):
    return DataLoader(
        VideoFrames(items, vid_stride),
        batch_size=batch,
        num_workers=min(1, workers),
        collate_fn=_as_list,
        pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None,
    )
