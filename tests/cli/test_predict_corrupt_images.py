"""`mrseg predict` over a folder of corrupt images (issue 13, bad input anywhere): every bad file is named in
failures.jsonl with its reason, the good one is predicted, exit 3, no traceback. The corrupt files are those
of tests/data/test_fuzz_images.py; the tiny seeded model of tests/engine/conftest.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mrseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_fuzz_images import VALID, _patch_size  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def test_predict_over_corrupt_files_names_each_and_goes_on(tiny_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = {
        "truncated.jpg": VALID[".jpg"][: len(VALID[".jpg"]) // 2],
        "empty.png": b"",
        "random.jpg": bytes(range(256)) * 3,
        "png-named.jpg": VALID[".png"][:40],  # wrong extension and cut short
        "bomb.png": _patch_size(VALID[".png"], ".png", 100_000, 100_000),
        "bomb.bmp": _patch_size(VALID[".bmp"], ".bmp", 2**31 - 1, 2**31 - 1),
        "magic.tiff": VALID[".tiff"][:12] + b"\x00" * 50,
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "good.webp").write_bytes(VALID[".webp"])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(folder), "--weights", str(tiny_weights), "--out", str(out), "--workers", "0",
                 "--format", "coco,jsonl"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(Path(f["path"]).name for f in failures) == sorted(bad)
    for f in failures:
        assert f["reason"]
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["good.webp"]


@pytest.mark.parametrize("batch", ["1", "2"])
def test_predict_of_extreme_strips_goes_through(tiny_weights, tmp_path, batch):
    """Images so elongated that fitting them into the model's max_size (128) leaves their short side under
    1 px (torchvision raises "Input and output sizes should be greater than 0" there): each is predicted
    (short side kept at 1 px) with the ordinary images beside it, exit 0."""
    import cv2
    import numpy as np

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    shapes = {"a_wide.png": (30, 5000), "b_tall.png": (5000, 30), "c_photo.png": (96, 128)}
    for name, (h, w) in shapes.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["predict", str(folder), "--weights", str(tiny_weights), "--out", str(out), "--workers", "0"]
    result = CliRunner().invoke(main, [*args, "--batch", batch, "--format", "coco,jsonl"])
    assert result.exit_code == 0, result.output
    coco = json.loads((out / "annotations.json").read_text())
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in coco["images"]}
    assert sizes == shapes
    for ann in coco["annotations"]:
        h, w = sizes[next(im["file_name"] for im in coco["images"] if im["id"] == ann["image_id"])]
        x, y, bw, bh = ann["bbox"]
        assert -0.01 <= x and x + bw <= w + 0.01 and -0.01 <= y and y + bh <= h + 0.01
