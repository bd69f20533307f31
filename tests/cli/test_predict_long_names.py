"""`mrseg predict` on inputs whose names are too long to write with a suffix and a temporary name (a stem of
236 characters: `labelme/<stem>.json` written as `.<stem>.json.<pid>.<hex>.tmp` exceeds 255 bytes): every
format is written under a shortened, stable, unique name, and `file_name` keeps the real name (issue 13.3).
Real photos shrunk to 96x72, the tiny seeded model of tests/engine/conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from mrseg.cli import main

NAME_MAX = 255  # the Linux limit on one file name, in bytes; the file system below enforces it
LONG_A = "a" * 230 + "-first"  # 236 characters, the same 230 first ones
LONG_B = "a" * 230 + "-other"
LONG_U = "é" * 118  # 236 bytes of 2-byte characters


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _photos(nuts_images, folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for src, stem in zip(nuts_images, (LONG_A, LONG_B, LONG_U, "short"), strict=False):
        target = folder / f"{stem}.jpg"
        cv2.imwrite(str(target), cv2.resize(cv2.imread(str(src)), (96, 72)))
        out.append(target)
    return out


def _run(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)], catch_exceptions=False)


def _names(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_inputs_with_names_too_long_for_a_temporary_file_get_every_format(
    tiny_weights, nuts_images, tmp_path
):
    photos = _photos(nuts_images, tmp_path / "photos")
    args = [tmp_path / "photos", "--weights", tiny_weights, "--score", "0.2", "--workers", "0"]
    args += ["--format", "coco,labelme,yolo,overlay"]
    result = _run(*args, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    coco = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(p.name for p in photos)
    for folder, ext in (("labelme", ".json"), ("yolo/labels", ".txt"), ("overlay", ".jpg")):
        names = _names(out / folder)
        assert len(names) == 4 and all(n.endswith(ext) for n in names), (folder, names)
        assert all(len(os.fsencode(n)) <= NAME_MAX for n in names)
        assert f"short{ext}" in names  # a name that fits is left as it is
    # labelme's own reading of its files: imagePath, relative to the json, is the input photo
    by_image = {}
    for doc_path in (out / "labelme").glob("*.json"):
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        image = (doc_path.parent / doc["imagePath"]).resolve()
        assert image.exists() and (doc["imageWidth"], doc["imageHeight"]) == (96, 72)
        by_image[image.name] = doc_path.name
    assert sorted(by_image) == sorted(p.name for p in photos)  # one file per input: the names stay unique
    # stable: a new run in the same folder writes the same names, so --resume and reruns find their files
    again = _run(*args, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    for folder in ("labelme", "yolo/labels", "overlay"):
        assert _names(tmp_path / "again" / folder) == _names(out / folder)
