"""Out-of-memory fallbacks for inference: a batch that runs out of memory is retried one image at a time,
an image that still does is predicted in tiles (one tile per model call), and an image that runs out of memory
even so becomes a failure (its reason) instead of an exception that ends the run.

Every retry happens after the failed call's frames (and the tensors they held) are gone and the CUDA cache is
emptied.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence

import torch

MIN_TILE = 32  # the smallest tile `--tile` takes; below it tiling is not worth trying


class InferenceOutOfMemory(MemoryError):
    """An image ran out of memory in a batch, alone and in tiles; the message says what to try. `results`:
    every image's Detections, or for each image that failed, why (a `str`)."""

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says that memory ran out: `torch.OutOfMemoryError` (CUDA, MPS, XPU), `MemoryError`, or
    the RuntimeError of the CPU allocator (`DefaultCPUAllocator: can't allocate memory`)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def fallback_tile(height: int, width: int, tile: int | None) -> int | None:
    """The tile side for an image that ran out of memory whole: `tile` (the run's `--tile`) when that cuts
    the image, else half the image's longer side; None when that is under `MIN_TILE` (nothing to tile)."""
    side = max(height, width)
    size = tile if tile is not None and tile < side else math.ceil(side / 2)
    return size if MIN_TILE <= size < side else None


def _attempt(run: Callable[[], list], device: torch.device) -> tuple[list | None, str | None]:
    """(run's result, None), or (None, the error's text) when it ran out of memory; other errors propagate."""
    try:
        return run(), None
    except Exception as e:  # noqa: BLE001 - only memory errors are handled, the rest re-raised
        if not is_out_of_memory(e):
            raise
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no details'}"
    # Outside the except block, the failed call's frames are released by now: give their memory back.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return None, reason


def infer_with_fallback(
    images: Sequence[torch.Tensor],
    run_whole: Callable[[list[torch.Tensor]], list],
    run_tiled: Callable[[torch.Tensor, int], object],
    device: torch.device,
    tile: int | None = None,
) -> list:
    """One result per image (uint8 [H, W, 3] tensors), in order: what `run_whole(images)` returns for it, or,
    after running out of memory, `run_whole([image])[0]`, then `run_tiled(image, tile_side)`; a `str` (why)
    for an image that ran out of memory every way. Errors other than out-of-memory propagate."""
    results, _ = _attempt(lambda: run_whole(list(images)), device)
    if results is not None:
        return results
    out: list = []
    for image in images:
        if len(images) > 1:
            single, reason = _attempt(lambda image=image: run_whole([image]), device)
            if single is not None:
                out.append(single[0])
                continue
        h, w = int(image.shape[0]), int(image.shape[1])
        side = fallback_tile(h, w, tile)
        if side is None:
            out.append(f"out of memory predicting this {w}x{h} image, alone; use a device with more memory")
            continue
        tiled, reason = _attempt(lambda image=image, side=side: [run_tiled(image, side)], device)
        if tiled is not None:
            out.append(tiled[0])
            continue
        out.append(
            f"out of memory predicting this {w}x{h} image, alone and in {side}x{side} tiles ({reason}); "
            "try a smaller --tile, a smaller --max-pixels, or a device with more memory"
        )
    return out
