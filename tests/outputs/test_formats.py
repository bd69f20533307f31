"""The format registry: option parsing, the writers it builds, the end-of-run files each format owns, and the
CLI's help naming every format."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mrseg.engine.run_folder import FINAL_FILES
from mrseg.outputs.formats import (
    FORMATS,
    FormatError,
    WriterOptions,
    finalize,
    item_writers,
    parse_formats,
)


def test_parse_formats_defaults_dedupes_and_names_what_is_wrong():
    assert parse_formats(None) == ["coco"]
    assert parse_formats(None, stream=True) == ["jsonl"]
    assert parse_formats(" Labelme,coco,labelme ,") == ["labelme", "coco"]
    with pytest.raises(FormatError, match=r"--format pascal: choose from coco,coco-results,jsonl"):
        parse_formats("coco,pascal")
    with pytest.raises(FormatError, match=r"\(empty\)"):
        parse_formats(",")
    with pytest.raises(FormatError, match="other formats need an output folder"):
        parse_formats("coco", stream=True)


def test_item_writers_put_the_ones_that_draw_pixels_last(tmp_path):
    opts = WriterOptions(out_dir=tmp_path, classes=[{"id": 1, "name": "a"}], simplify=1.0)
    writers = item_writers(["overlay", "labelme", "coco", "yolo"], opts)
    assert [type(w).__name__ for w in writers] == ["LabelmeWriter", "YoloWriter", "OverlayWriter"]
    assert item_writers(["coco", "coco-results", "jsonl"], opts) == []


def test_finalize_writes_each_formats_own_file_and_the_run_folder_knows_them_all(tmp_path):
    """Each format's end-of-run file is what finalize reports, and a fresh run clears every one of them."""
    classes = [{"id": 1, "name": "a"}]
    for name, fmt in FORMATS.items():
        out = tmp_path / name
        out.mkdir()
        written = finalize(out, [name], [], classes)
        if fmt.final_file is None:
            assert written == {}
            continue
        assert written == {name: out / fmt.final_file} and written[name].is_file()
        assert fmt.final_file in FINAL_FILES


def test_every_format_is_in_the_predict_help():
    from mrseg.cli import main

    result = CliRunner().invoke(main, ["predict", "--help"], terminal_width=200)
    assert result.exit_code == 0
    help_text = " ".join(result.output.split()).replace("- ", "-")  # click wraps after a hyphen
    assert all(name in help_text for name in FORMATS)
    exact = [n for n, f in FORMATS.items() if f.exact_masks]
    said_exact = help_text.split("Exact masks")[1][:200]
    assert exact == ["coco-results", "jsonl"] and all(n in said_exact for n in exact)
