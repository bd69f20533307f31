"""A binary mask held as the part of the image that holds it: `MaskCrop` (one), `CroppedMasks` (a stack).

A full-size mask of a 12-Mpx photo is 12 MB while the object is often a few hundred pixels across, so the
encoders (polygons, RLE, overlays) work on the crop. `MaskCrop.from_mask` scans the detection box, widened by
a margin, for the mask's exact bounds and only checks the rest is empty (a cheap `any()`), else scans the
whole mask: the result never depends on the box. `CroppedMasks` hands over per-instance crops (e.g. masks
pasted into their boxes) without building full-size masks; it reads like the bool `[N, H, W]` array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)  # eq=False: no element-wise array comparison
class MaskCrop:
    """The binary mask of an image `[height, width]` that is `crop` (bool `[h, w]`) at (x0, y0), 0 elsewhere.
    With `tight` its first/last rows and columns each hold a pixel (or it is `[0, 0]`: an empty mask)."""

    crop: np.ndarray
    x0: int
    y0: int
    height: int
    width: int
    tight: bool = False

    def __post_init__(self):
        h, w = self.crop.shape if self.crop.ndim == 2 else (-1, -1)
        if h < 0 or self.crop.dtype != bool:
            got = f"{self.crop.dtype} {self.crop.shape}"
            raise ValueError(f"MaskCrop: crop must be a 2-D bool array, got {got}")
        if h and w and not (0 <= self.x0 and 0 <= self.y0 and self.x0 + w <= self.width
                            and self.y0 + h <= self.height):  # fmt: skip
            raise ValueError(
                f"MaskCrop: a {w}x{h} crop at ({self.x0}, {self.y0}) does not fit the "
                f"{self.width}x{self.height} image"
            )

    @classmethod
    def from_mask(cls, mask: np.ndarray, box: Sequence[float] | None = None) -> MaskCrop:
        """The tight crop of a full-size mask `[H, W]` (or `[1, H, W]`; nonzero = set). `box`: xyxy pixels
        where the mask is expected (the detection box); only a hint, the result is exact."""
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(f"expected a mask [H, W] or [1, H, W], got shape {mask.shape}")
        height, width = mask.shape
        region = _hint_region(box, width, height) if box is not None else None
        if region is None or _any_outside(mask, *region):
            region = (0, 0, width, height)
        x0, y0, x1, y1 = region
        return cls._tight_from(mask[y0:y1, x0:x1], x0, y0, height, width)

    @classmethod
    def _tight_from(cls, sub: np.ndarray, x0: int, y0: int, height: int, width: int) -> MaskCrop:
        rows = np.flatnonzero(sub.any(axis=1))
        if rows.size == 0:
            return cls(np.zeros((0, 0), bool), 0, 0, height, width, tight=True)
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        cols = np.flatnonzero(sub[r0:r1].any(axis=0))
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        part = sub[r0:r1, c0:c1]
        crop = part.copy() if part.dtype == bool else part != 0  # never a view into the caller's masks
        return cls(crop, x0 + c0, y0 + r0, height, width, tight=True)

    def tightened(self) -> MaskCrop:
        """This mask with its crop cut to the mask's exact bounds (self when already tight)."""
        if self.tight:
            return self
        return MaskCrop._tight_from(self.crop, self.x0, self.y0, self.height, self.width)

    @property
    def area(self) -> int:
        """Number of set pixels."""
        return int(np.count_nonzero(self.crop))

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """The crop's xyxy pixel bounds (exclusive ends) in the image."""
        h, w = self.crop.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def full(self) -> np.ndarray:
        """The full-size mask, bool `[height, width]`."""
        return self.window(0, 0, self.width, self.height)

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The part (x0, y0)-(x1, y1) (exclusive ends, image pixels) of the mask, bool `[y1 - y0, x1 - x0]`;
        the window may reach past the crop and the image (False there)."""
        out = np.zeros((y1 - y0, x1 - x0), bool)
        cx0, cy0, cx1, cy1 = self.bounds
        ix0, iy0, ix1, iy1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
        if ix0 < ix1 and iy0 < iy1:
            part = self.crop[iy0 - cy0 : iy1 - cy0, ix0 - cx0 : ix1 - cx0]
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = part
        return out


def _hint_region(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box widened by 1/8 of its size + 2 px per side (a pasted Mask R-CNN mask spills ~1/28 past its
    box), clipped to the image; None for a box that is not finite or leaves nothing."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return None
    mx, my = 2 + max(x1 - x0, 0) / 8, 2 + max(y1 - y0, 0) / 8
    rx0, ry0 = max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my))
    rx1, ry1 = min(width, math.ceil(x1 + mx)), min(height, math.ceil(y1 + my))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    return rx0, ry0, rx1, ry1


def _any_outside(mask: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    return bool(mask[:y0].any() or mask[y1:].any() or mask[y0:y1, :x0].any() or mask[y0:y1, x1:].any())


class CroppedMasks:
    """Instance masks bool `[N, H, W]` held as one `MaskCrop` per instance.

    Reads like the array: `len`, `shape`, `masks[i]` (a full-size bool `[H, W]`, built on demand),
    `masks[idx]` for a slice / index / bool array (another `CroppedMasks`), `np.asarray(masks)`. `crop(i)`
    (what the writers use) gives the `MaskCrop` without building anything.
    """

    ndim = 3
    dtype = np.dtype(bool)

    def __init__(self, crops: Sequence[MaskCrop], height: int, width: int):
        self._crops = list(crops)
        self.height, self.width = int(height), int(width)
        for c in self._crops:
            if (c.height, c.width) != (self.height, self.width):
                raise ValueError(
                    f"CroppedMasks: a crop of a {c.width}x{c.height} image "
                    f"in a stack of {self.width}x{self.height} masks"
                )

    @classmethod
    def from_crops(
        cls, crops: Sequence[np.ndarray], origins: np.ndarray, height: int, width: int
    ) -> CroppedMasks:
        """From crops (each `[h_i, w_i]`, nonzero = set) and their top-left corners `origins` int `[N, 2]`
        (x, y); a crop that reaches past the image is clipped to it."""
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 2)
        if len(origins) != len(crops):
            raise ValueError(f"CroppedMasks: {len(crops)} crops but {len(origins)} origins")
        out = []
        for crop, (x, y) in zip(crops, origins, strict=True):
            crop = np.asarray(crop)
            if crop.ndim != 2:
                raise ValueError(f"CroppedMasks: each crop must be 2-D, got shape {crop.shape}")
            h, w = crop.shape
            cx0, cy0 = max(0, -x), max(0, -y)
            cx1, cy1 = max(cx0, min(w, width - x)), max(cy0, min(h, height - y))
            part = crop[cy0:cy1, cx0:cx1]
            part = part.astype(bool) if part.dtype != bool else part
            if part.size == 0:
                out.append(MaskCrop(np.zeros((0, 0), bool), 0, 0, height, width))
            else:
                out.append(MaskCrop(part, int(x + cx0), int(y + cy0), height, width))
        return cls(out, height, width)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._crops), self.height, self.width)

    def __len__(self) -> int:
        return len(self._crops)

    def crop(self, i: int) -> MaskCrop:
        return self._crops[i]

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self._crops[idx].full()
        if isinstance(idx, slice):
            return CroppedMasks(self._crops[idx], self.height, self.width)
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"CroppedMasks: bool index of shape {idx.shape} for {len(self)} masks")
            idx = np.flatnonzero(idx)
        return CroppedMasks([self._crops[int(i)] for i in idx.reshape(-1)], self.height, self.width)

    def __iter__(self):
        return (c.full() for c in self._crops)

    def __array__(self, dtype=None, copy=None):
        out = np.zeros(self.shape, bool)
        for k, c in enumerate(self._crops):
            x0, y0, x1, y1 = c.bounds
            out[k, y0:y1, x0:x1] = c.crop
        return out if dtype is None else out.astype(dtype)


def as_crop(mask: np.ndarray | MaskCrop) -> MaskCrop:
    """A tight `MaskCrop` of a full-size mask `[H, W]` (or of a `MaskCrop`)."""
    return mask.tightened() if isinstance(mask, MaskCrop) else MaskCrop.from_mask(mask)


def instance_crop(masks, i: int, box: Sequence[float] | None = None) -> MaskCrop:
    """The tight `MaskCrop` of instance `i` of `masks` (bool `[N, H, W]`, `[N, 1, H, W]` or `CroppedMasks`);
    `box` (xyxy) tells where to look first in a full-size mask."""
    if isinstance(masks, CroppedMasks):
        return masks.crop(i).tightened()
    return MaskCrop.from_mask(masks[i], box)
