"""oom.py on its own: which errors count as running out of memory (the ones torch and numpy really raise), the
fallback tile side, and infer_with_fallback's ladder (batch, one image at a time, tiles, a reason) with
stand-in model calls. test_predict_oom.py runs the same ladder through the Predictor and `mrseg predict`."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from mrseg.engine.predict.oom import MIN_TILE, fallback_tile, infer_with_fallback, is_out_of_memory

CPU = torch.device("cpu")


def raised_by(call) -> BaseException:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the error itself is what the test looks at
        return e
    raise AssertionError("it did not raise")


def test_the_errors_torch_and_numpy_raise_when_memory_runs_out_count():
    cpu_alloc = raised_by(lambda: torch.empty(2**50, dtype=torch.uint8))  # 1 PiB
    assert type(cpu_alloc) is RuntimeError and "can't allocate memory" in str(cpu_alloc)
    assert is_out_of_memory(cpu_alloc)
    numpy_alloc = raised_by(lambda: np.empty(2**50, np.uint8))
    assert isinstance(numpy_alloc, MemoryError) and is_out_of_memory(numpy_alloc)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"))


def test_other_errors_do_not_count():
    mismatch = raised_by(lambda: torch.zeros(2, 3) @ torch.zeros(2, 3))
    assert not is_out_of_memory(mismatch)
    assert not is_out_of_memory(ValueError("out of memory"))  # only a RuntimeError's text is read
    assert not is_out_of_memory(OSError(28, "No space left on device"))


@pytest.mark.parametrize(
    ("height", "width", "tile", "expected"),
    [
        (600, 800, 256, 256),  # the run's --tile cuts the image: it is the side
        (600, 800, None, 400),  # no --tile: half the longer side
        (601, 801, None, 401),  # rounded up
        (600, 800, 800, 400),  # a --tile that does not cut the image: half instead
        (600, 800, 2000, 400),
        (40, 30, None, None),  # half of 40 is under MIN_TILE: nothing to tile
        (64, 64, None, 32),
        (63, 10, None, 32),  # 31.5 rounded up reaches MIN_TILE
        (62, 10, None, None),
        (600, 800, 16, None),  # a --tile under MIN_TILE
    ],
)
def test_fallback_tile(height, width, tile, expected):
    assert MIN_TILE == 32
    side = fallback_tile(height, width, tile)
    assert side == expected
    if side is not None:
        assert MIN_TILE <= side < max(height, width)


def image(h: int, w: int, value: int = 1) -> torch.Tensor:
    return torch.full((h, w, 3), value, dtype=torch.uint8)


class FakeModel:
    """run_whole / run_tiled stand-ins that run out of memory past `max_batch` images or `max_side`
    pixels, and for every image of `never` (by its pixel value); the result of an image is (how, value)."""

    def __init__(self, *, max_batch=99, max_side=10_000, never=(), error=torch.OutOfMemoryError):
        self.max_batch, self.max_side, self.never, self.error = max_batch, max_side, set(never), error
        self.calls: list[tuple] = []

    def _check(self, images, side):
        if len(images) > self.max_batch or side > self.max_side or any(int(x[0, 0, 0]) in self.never
                                                                         for x in images):  # fmt: skip
            raise self.error("CUDA out of memory. Tried to allocate 4.00 GiB\nmore lines")

    def run_whole(self, images):
        self.calls.append(("whole", len(images)))
        self._check(images, max(max(x.shape[:2]) for x in images))
        return [("whole", int(x[0, 0, 0])) for x in images]

    def run_tiled(self, img, side):
        self.calls.append(("tiled", side))
        self._check([img], side)
        return ("tiled", int(img[0, 0, 0]))


def test_a_batch_that_fits_is_one_call():
    model = FakeModel()
    images = [image(60, 80, v) for v in (1, 2, 3)]
    got = infer_with_fallback(images, model.run_whole, model.run_tiled, CPU)
    assert got == [("whole", v) for v in (1, 2, 3)]
    assert model.calls == [("whole", 3)]


def test_a_batch_that_does_not_fit_goes_one_image_at_a_time():
    model = FakeModel(max_batch=1)
    images = [image(60, 80, v) for v in (1, 2, 3)]
    got = infer_with_fallback(images, model.run_whole, model.run_tiled, CPU)
    assert got == [("whole", v) for v in (1, 2, 3)]
    assert model.calls == [("whole", 3), ("whole", 1), ("whole", 1), ("whole", 1)]


def test_an_image_that_does_not_fit_alone_is_tiled_at_the_runs_tile_or_half_its_side():
    model = FakeModel(max_side=300)
    big, small = image(600, 800, 1), image(60, 80, 2)
    out = infer_with_fallback([big, small], model.run_whole, model.run_tiled, CPU, tile=256)
    assert out == [("tiled", 1), ("whole", 2)]
    assert model.calls == [("whole", 2), ("whole", 1), ("tiled", 256), ("whole", 1)]
    model = FakeModel(max_side=500)
    assert infer_with_fallback([big], model.run_whole, model.run_tiled, CPU) == [("tiled", 1)]
    assert model.calls == [("whole", 1), ("tiled", 400)]  # one image: no second try alone


def test_an_image_that_never_fits_becomes_its_reason_and_the_others_go_on():
    model = FakeModel(max_batch=1, never={2}, error=MemoryError)
    images = [image(600, 800, 1), image(600, 800, 2), image(40, 30, 2), image(600, 800, 3)]
    out = infer_with_fallback(images, model.run_whole, model.run_tiled, CPU, tile=200)
    assert out[0] == ("whole", 1) and out[3] == ("whole", 3)
    assert out[1] == (
        "out of memory predicting this 800x600 image, alone and in 200x200 tiles (MemoryError: CUDA out of "
        "memory. Tried to allocate 4.00 GiB); try a smaller --tile, a smaller --max-pixels, or a device with "
        "more memory"
    )
    assert out[2] == "out of memory predicting this 30x40 image, alone; use a device with more memory"
    assert ("tiled", 200) in model.calls and model.calls.count(("tiled", 200)) == 1  # 30x40 is not tiled


@pytest.mark.parametrize("where", ["batch", "alone", "tiles"])
def test_an_error_that_is_not_memory_propagates(where):
    def run_whole(images):
        if where == "batch" or (where == "alone" and len(images) == 1):
            raise RuntimeError("Expected all tensors to be on the same device")
        raise torch.OutOfMemoryError("CUDA out of memory")

    def run_tiled(img, side):
        raise RuntimeError("Expected all tensors to be on the same device")

    with pytest.raises(RuntimeError, match="same device"):
        infer_with_fallback([image(600, 800), image(600, 800)], run_whole, run_tiled, CPU)


def test_a_retry_starts_after_the_failed_calls_tensors_are_freed():
    """The tensors a failed call held (referenced from its frames, which the exception's traceback keeps)
    are gone before the next try, so the retry can use their memory."""
    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def run_whole(images):
        alive_at_retry.extend(ref() is not None for ref in held)
        if len(images) > 1:
            activations = torch.ones(1024)  # what a forward pass holds when it runs out of memory
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory")
        return ["ok"]

    gc.collect()
    assert infer_with_fallback([image(8, 8), image(8, 8)], run_whole, None, CPU) == ["ok", "ok"]
    assert held and alive_at_retry == [False, False]
