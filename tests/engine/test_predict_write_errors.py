"""An error writing one input's files makes that input a failure, not the end of the run (issue 13.3): the
other inputs and formats are complete, the failed input's partial files are gone, and `--resume` redoes it to
the clean run's result. An error every input would hit (disk full) still stops the run.
Photos shrunk to 96x72, the tiny seeded model of conftest.py."""

from __future__ import annotations

import errno
import json

import cv2
import pytest

from mrseg.engine.predict_run import predict
from mrseg.outputs import YoloWriter

OPTS = {"score": 0.2, "workers": 0, "quiet": True, "formats": "coco,labelme,yolo,overlay"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture()
def photos(tmp_path, nuts_images):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in nuts_images[:3]:
        cv2.imwrite(str(folder / p.name), cv2.resize(cv2.imread(str(p)), (96, 72)))
    return folder


def _fail_yolo_for(monkeypatch, name: str, error: OSError) -> None:
    """YOLO writing fails for the input `name` (after labelme wrote its file: that one must be taken back)."""
    write = YoloWriter.write

    def failing(self, item, *args):
        if item.rel_path == name:
            raise error
        return write(self, item, *args)

    monkeypatch.setattr(YoloWriter, "write", failing)


def _coco(out):
    data = json.loads((out / "annotations.json").read_text())
    data.pop("info")
    return data


def test_a_write_error_fails_that_input_only_and_resume_redoes_it(
    tiny_weights, photos, tmp_path, monkeypatch
):
    names = sorted(p.name for p in photos.iterdir())
    predict([str(photos)], weights=tiny_weights, out=tmp_path / "clean", **OPTS)

    out = tmp_path / "out"
    _fail_yolo_for(monkeypatch, names[1], OSError(errno.ENAMETOOLONG, "File name too long"))
    summary = predict([str(photos)], weights=tiny_weights, out=out, **OPTS)
    assert (summary.processed, summary.failed) == (2, 1)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["file_name"], f["id"]) for f in failures] == [(names[1], 2)]
    assert "File name too long" in failures[0]["reason"]
    stem = names[1].rsplit(".", 1)[0]
    for folder, ext in (("labelme", ".json"), ("yolo/labels", ".txt"), ("overlay", ".jpg")):
        got = sorted(p.name for p in (out / folder).iterdir())
        assert f"{stem}{ext}" not in got and len(got) == 2, (folder, got)  # the others complete, no leftover
    assert sorted(im["file_name"] for im in _coco(out)["images"]) == [names[0], names[2]]

    monkeypatch.undo()
    resumed = predict([str(photos)], weights=tiny_weights, out=out, resume=True, **OPTS)
    assert (resumed.processed, resumed.skipped, resumed.failed) == (1, 2, 0)
    assert not (out / "failures.jsonl").exists()
    assert _coco(out) == _coco(tmp_path / "clean")
    for folder in ("labelme", "yolo/labels", "overlay"):
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(
            p.name for p in (tmp_path / "clean" / folder).iterdir()
        )
        if folder != "overlay":  # JPEG bytes may differ by encoder build; the text formats must not
            for p in (out / folder).iterdir():
                assert p.read_bytes() == (tmp_path / "clean" / folder / p.name).read_bytes()


def test_disk_full_still_stops_the_run(tiny_weights, photos, tmp_path, monkeypatch):
    names = sorted(p.name for p in photos.iterdir())
    _fail_yolo_for(monkeypatch, names[0], OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RuntimeError, match="No space left on device"):
        predict([str(photos)], weights=tiny_weights, out=tmp_path / "out", **OPTS)
