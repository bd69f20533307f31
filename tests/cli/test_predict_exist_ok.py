"""A fresh `--exist-ok` run removes the previous run's per-item files, and only those (issue 13, point 10).

Run 1 predicts a.jpg, b.jpg and sub/d.jpg into labelme/, yolo/ and overlay/; the user adds files of their own
there; run 2 (`--exist-ok`, other inputs) must leave exactly its own files plus the user's: none of run 1's
labelme json, YOLO labels, image links or overlays mixed in, folders it emptied gone, the user's kept.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from mrseg.cli import main

COMMON = ["--score", "0.2", "--format", "labelme,yolo,overlay", "--workers", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _photos(nuts_images, folder: Path, names: list[str]) -> None:
    for name, src in zip(names, nuts_images, strict=False):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), cv2.resize(cv2.imread(str(src)), (120, 90)))


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".mrseg" not in p.parts
    }


def test_exist_ok_removes_the_previous_runs_files_and_keeps_the_users(tmp_path, nuts_images, tiny_weights):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    _photos(nuts_images, first, ["a.jpg", "b.jpg", "sub/d.jpg"])
    _photos(nuts_images, second, ["c.jpg"])
    runner = CliRunner()
    res = runner.invoke(
        main, ["predict", str(first), "--weights", str(tiny_weights), "--out", str(out), *COMMON]
    )
    assert res.exit_code == 0, res.output
    assert "labelme/sub/d.json" in _files(out) and "overlay/b.jpg" in _files(out)
    user = ["labelme/notes.txt", "yolo/labels/mine.txt", "overlay/keep/me.png"]
    for name in user:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("the user's")

    res = runner.invoke(
        main,
        ["predict", str(second), "--weights", str(tiny_weights), "--out", str(out), "--exist-ok", *COMMON],
    )
    assert res.exit_code == 0, res.output
    assert _files(out) == {
        "labelme/c.json", "yolo/labels/c.txt", "yolo/images/c.jpg", "yolo/data.yaml", "overlay/c.jpg", *user,
    }  # fmt: skip
    assert not (out / "labelme" / "sub").exists()  # emptied by the removal
    assert all((out / name).read_text() == "the user's" for name in user)
    assert (first / "a.jpg").is_file()  # the yolo/images links went, never the inputs they linked to


def test_a_run_that_fails_to_start_leaves_nothing_in_the_way(
    tiny_weights, nuts_images, tmp_path, monkeypatch
):
    """Wrong weights or an empty folder stop predict before any input; the corrected command then runs in
    the same --out (no "already holds a predict run"), and the default runs/predict is reused, not skipped."""
    images = tmp_path / "images"
    images.mkdir()
    _photos(nuts_images, images, ["a.jpg"])
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    base = ["predict", "--workers", "0", "-q", "--format", "coco"]
    for bad in (
        [str(images), "--weights", str(tmp_path / "nope.pt")],
        [str(tmp_path / "empty"), "--weights", str(tiny_weights)],
    ):
        result = CliRunner().invoke(main, [*base, *bad, "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert not out.exists(), _files(out)  # the folder it made is gone again
    out.mkdir()  # a folder the user made stays
    result = CliRunner().invoke(
        main, [*base, str(images), "--weights", str(tmp_path / "nope.pt"), "--out", str(out)]
    )
    assert result.exit_code == 1 and out.is_dir() and not any(out.iterdir())
    result = CliRunner().invoke(main, [*base, str(images), "--weights", str(tiny_weights), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "annotations.json").is_file()

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*base, str(images), "--weights", str(tmp_path / "nope.pt")])
    assert result.exit_code == 1
    result = CliRunner().invoke(main, [*base, str(images), "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["predict"]
