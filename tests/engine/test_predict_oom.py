"""Running out of memory in predict (issue 13.3): a batch that does is retried one image at a time, an image
that does alone is predicted in tiles (one per model call), and an image that does even so becomes a failure
record (exit status 3) while the run goes on. On the CPU, with the model call made to raise
`torch.OutOfMemoryError` / `MemoryError` for the inputs a small GPU could not hold; each fallback's
detections must equal those of a run that asked for that mode itself (--batch 1, --tile). Photos shrunk to
96x72, the tiny seeded model of conftest.py."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mrseg.cli import main
from mrseg.data.images import read_image
from mrseg.engine.predict_run import predict
from mrseg.engine.predictor import InferenceOutOfMemory, Predictor

SIDE = 48  # inputs with a longer side "don't fit"; 96x72 photos fall back to 48x48 tiles


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture()
def photos(tmp_path, nuts_images):
    """Two photos and an all-black image (the one that runs out of memory however it is cut)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in nuts_images[:2]:
        cv2.imwrite(str(folder / p.name), cv2.resize(cv2.imread(str(p)), (96, 72)))
    cv2.imwrite(str(folder / "zz_black.png"), np.zeros((72, 96, 3), np.uint8))
    return folder


def _limit_memory(monkeypatch, *, batch: int | None = None, side: int | None = None, black: bool = False):
    """Make the model call raise as a full GPU would: for more than `batch` images, for an image with a
    side over `side`, and (with `black`) for any all-black input. Returns the list of calls' input sizes."""
    forward = Predictor._forward
    calls = []

    def limited(self, inputs):
        sizes = [tuple(int(v) for v in x.shape[-2:]) for x in inputs]
        calls.append(sizes)
        if batch is not None and len(inputs) > batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        if side is not None and any(max(s) > side for s in sizes):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (test)")
        if black and any(float(x.max()) == 0.0 for x in inputs):
            raise MemoryError()
        return forward(self, inputs)

    monkeypatch.setattr(Predictor, "_forward", limited)
    return calls


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(np.asarray(a.masks), np.asarray(b.masks))


def _images(photos) -> list[np.ndarray]:
    return [read_image(str(p)) for p in sorted(photos.glob("*.jpg"))]


def test_a_batch_out_of_memory_is_retried_one_image_at_a_time(tiny_model, tiny_classes, photos, monkeypatch):
    images = _images(photos)
    alone = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=1)
    expected = alone.predict_batch(images)
    assert sum(len(d) for d in expected) > 0
    calls = _limit_memory(monkeypatch, batch=1)
    batched = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=2)
    got = batched.predict_batch(images)
    assert [len(c) for c in calls] == [2, 1, 1]
    for g, e in zip(got, expected, strict=True):
        _same(g, e)


def test_an_image_out_of_memory_alone_is_predicted_in_tiles(tiny_model, tiny_classes, photos, monkeypatch):
    image = _images(photos)[0]
    tiled = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, tile=SIDE)
    expected = tiled(image)
    calls = _limit_memory(monkeypatch, side=SIDE)
    plain = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=4)
    _same(plain(image), expected)
    assert calls[0] == [(72, 96)] and all(len(c) == 1 and max(c[0]) <= SIDE for c in calls[1:])


def test_an_image_out_of_memory_every_way_raises_with_the_others_results(tiny_model, tiny_classes, photos,
                                                                         monkeypatch):  # fmt: skip
    a, b = _images(photos)
    black = np.zeros_like(a)
    expected = [
        Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2)(im) for im in (a, b)
    ]
    p = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=3)
    _limit_memory(monkeypatch, black=True)
    with pytest.raises(InferenceOutOfMemory, match=r"out of memory predicting this 96x72 image.*--tile") as e:
        p.predict_batch([a, black, b])
    results = e.value.results
    assert isinstance(results[1], str)
    _same(results[0], expected[0])
    _same(results[2], expected[1])


def _per_image(out) -> dict[str, list]:
    data = json.loads((out / "annotations.json").read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    got = {name: [] for name in names.values()}
    for ann in data["annotations"]:
        got[names[ann["image_id"]]].append(
            (ann["category_id"], ann["bbox"], ann["score"], ann["segmentation"])
        )
    return got


def test_predict_records_the_image_that_never_fits_and_finishes_the_rest(tiny_weights, photos, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    opts = {"weights": tiny_weights, "score": 0.2, "workers": 0, "quiet": True, "formats": "coco"}
    predict([str(photos)], out=tmp_path / "clean", batch=1, **opts)
    _limit_memory(monkeypatch, batch=1, black=True)
    summary = predict([str(photos)], out=tmp_path / "out", batch=3, **opts)
    assert (summary.processed, summary.failed) == (2, 1)
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert failure["file_name"] == "zz_black.png" and "out of memory" in failure["reason"]
    clean = _per_image(tmp_path / "clean")
    del clean["zz_black.png"]
    assert _per_image(tmp_path / "out") == clean


def test_cli_falls_back_to_single_images_then_tiles_and_exits_3_for_the_rest(tiny_weights, photos, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    common = ["--weights", tiny_weights, "--score", "0.2", "--workers", "0", "--format", "coco"]
    runner = CliRunner()
    clean = runner.invoke(main, ["predict", str(photos), *map(str, common), "--tile", str(SIDE),
                                 "--batch", "1", "--out", str(tmp_path / "clean")])  # fmt: skip
    assert clean.exit_code == 0, clean.output
    calls = _limit_memory(monkeypatch, batch=1, side=SIDE, black=True)
    result = runner.invoke(main, ["predict", str(photos), *map(str, common), "--batch", "3",
                                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "zz_black.png" in result.stderr and "out of memory" in result.stderr
    assert any(len(c) == 3 for c in calls) and any(max(c[0]) == 96 for c in calls if len(c) == 1)
    failures = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in failures] == ["zz_black.png"]
    want = _per_image(tmp_path / "clean")
    del want["zz_black.png"]
    assert _per_image(tmp_path / "out") == want
