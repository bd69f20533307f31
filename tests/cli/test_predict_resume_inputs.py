"""`mrseg predict --resume` when the inputs changed since the interrupted run (issue 13, point 1).

Input ids are positions in the sorted listing: a file added to the folder (or another stdin / .txt list)
between a crash and `--resume` shifts the ids, and the journal's "done" ids then name other files (one input
predicted twice, another never). The resume must be refused with a message that says what changed; with the
inputs restored it must go on and finish with every input exactly once (read back with pycocotools).
The runs go through the CLI's entry point in this process (click's runner): a subprocess per run costs a
torch import each, tens of seconds on a loaded machine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO

from mrseg.cli import main

COMMON = ["--score", "0.2", "--format", "coco", "--workers", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _photos(nuts_images, folder: Path, names: list[str]) -> dict[str, Path]:
    """Real photos shrunk to 120x90, saved under the given names."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in zip(names, nuts_images, strict=False):
        out[name] = folder / name
        cv2.imwrite(str(out[name]), cv2.resize(cv2.imread(str(src)), (120, 90)))
    assert len(out) == len(names), "not enough test photos"
    return out


def _predict(*args, stdin: str | None = None):
    return CliRunner().invoke(main, ["predict", *map(str, args)], input=stdin, catch_exceptions=False)


def _crash_after(out: Path, n_done: int) -> None:
    """Leaves `out` as a kill after `n_done` finished inputs would: that many journal lines, no final file."""
    journal = out / ".mrseg" / "records-0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) > n_done
    journal.write_text("".join(lines[:n_done]))
    (out / "annotations.json").unlink()


def _file_names(out: Path) -> list[str]:
    return sorted(Path(im["file_name"]).name for im in COCO(str(out / "annotations.json")).dataset["images"])


def test_file_added_to_the_folder_before_resume_is_refused(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    spare = _photos(nuts_images, tmp_path / "spare", ["b.jpg"])["b.jpg"]
    _photos(nuts_images[1:], photos, ["a.jpg", "c.jpg", "d.jpg"])
    out = tmp_path / "out"
    first = _predict(photos, "--weights", tiny_weights, "--out", out, *COMMON)
    assert first.exit_code == 0, first.output
    _crash_after(out, 2)  # a.jpg and c.jpg were done

    (photos / "b.jpg").write_bytes(spare.read_bytes())
    resumed = _predict(photos, "--weights", tiny_weights, "--out", out, *COMMON, "--resume")
    # Without the check this "succeeds" with c.jpg twice and b.jpg never predicted.
    assert resumed.exit_code == 1, resumed.output
    err = " ".join(resumed.stderr.split())
    assert "inputs differ" in err and str(out) in err
    assert "had 3 input(s)" in err and "now list 4" in err
    assert "1 new" in err and "b.jpg" in err
    assert "first changed id: 2" in err and "c.jpg" in err
    assert "Restore the inputs" in err and "--exist-ok" in err
    assert "Traceback" not in resumed.stderr
    assert not (out / "annotations.json").exists()
    assert (out / ".mrseg" / "records-0.jsonl").read_text().count("\n") == 2  # the journal is untouched

    (photos / "b.jpg").unlink()  # inputs restored: the resume goes on and finishes
    again = _predict(photos, "--weights", tiny_weights, "--out", out, *COMMON, "--resume")
    assert again.exit_code == 0, again.output
    assert _file_names(out) == ["a.jpg", "c.jpg", "d.jpg"]


def test_other_stdin_list_before_resume_is_refused(tiny_weights, nuts_images, tmp_path):
    p = _photos(nuts_images, tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out"
    listed = f"{p['a.jpg']}\n{p['c.jpg']}\n"
    first = _predict("-", "--weights", tiny_weights, "--out", out, *COMMON, stdin=listed)
    assert first.exit_code == 0, first.output
    _crash_after(out, 1)
    other = f"{p['b.jpg']}\n{p['c.jpg']}\n"  # same count, another file first
    resumed = _predict("-", "--weights", tiny_weights, "--out", out, *COMMON, "--resume", stdin=other)
    assert resumed.exit_code == 1
    err = " ".join(resumed.stderr.split())
    assert "inputs differ" in err and "1 new" in err and "1 gone" in err
    assert "first changed id: 1" in err and "a.jpg" in err and "b.jpg" in err
    again = _predict("-", "--weights", tiny_weights, "--out", out, *COMMON, "--resume", stdin=listed)
    assert again.exit_code == 0, again.output
    assert _file_names(out) == ["a.jpg", "c.jpg"]


def test_edited_txt_list_before_resume_is_refused(tiny_weights, nuts_images, tmp_path):
    _photos(nuts_images, tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"])
    listing = tmp_path / "list.txt"
    listing.write_text("photos/a.jpg\nphotos/c.jpg\n")
    out = tmp_path / "out"
    first = _predict(listing, "--weights", tiny_weights, "--out", out, *COMMON)
    assert first.exit_code == 0, first.output
    _crash_after(out, 1)
    listing.write_text("photos/a.jpg\nphotos/b.jpg\nphotos/c.jpg\n")
    resumed = _predict(listing, "--weights", tiny_weights, "--out", out, *COMMON, "--resume")
    assert resumed.exit_code == 1
    err = " ".join(resumed.stderr.split())
    assert "inputs differ" in err and "had 2 input(s)" in err and "now list 3" in err
    assert "1 new" in err and "b.jpg" in err and "first changed id: 2" in err
