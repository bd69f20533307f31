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
