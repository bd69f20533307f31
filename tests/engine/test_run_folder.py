"""Where a run writes: runs/predict, runs/predict2, ...; what --resume and --exist-ok may do with a folder."""

import json

import pytest

from mrseg.engine.run_folder import RunFolderError, resolve_out_dir, start_state


def test_default_folders_are_numbered_and_resume_picks_the_latest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunFolderError, match="no earlier run"):
        resolve_out_dir(None, exist_ok=False, resume=True)
    first = resolve_out_dir(None, exist_ok=False, resume=False)
    assert first.as_posix() == "runs/predict"
    start_state(first, {"sources": ["a"]}, resume=False)
    second = resolve_out_dir(None, exist_ok=False, resume=False)
    assert second.as_posix() == "runs/predict2"
    start_state(second, {"sources": ["a"]}, resume=False)
    (tmp_path / "runs" / "predict10").mkdir()
    assert resolve_out_dir(None, exist_ok=False, resume=False).as_posix() == "runs/predict3"
    assert resolve_out_dir(None, exist_ok=False, resume=True).as_posix() == "runs/predict10"
    assert resolve_out_dir(None, exist_ok=True, resume=False).as_posix() == "runs/predict"


def test_an_explicit_folder_holding_a_run_needs_resume_or_exist_ok(tmp_path):
    out = tmp_path / "out"
    assert resolve_out_dir(out, exist_ok=False, resume=False) == out
    with pytest.raises(RunFolderError, match="holds no earlier run"):
        resolve_out_dir(out, exist_ok=False, resume=True)
    meta = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco"]}
    start_state(out, meta, resume=False)
    (out / ".mrseg" / "records-0.jsonl").write_text('{"image": {"id": 1}}\n')
    with pytest.raises(RunFolderError, match="--resume to continue it, --exist-ok"):
        resolve_out_dir(out, exist_ok=False, resume=False)
    assert resolve_out_dir(out, exist_ok=False, resume=True) == out

    with pytest.raises(RunFolderError, match=r"--format differ.*\['coco'\].*\['yolo'\]"):
        start_state(out, {**meta, "formats": ["yolo"]}, resume=True)
    start_state(out, meta, resume=True)  # same run: accepted, journal kept
    assert (out / ".mrseg" / "records-0.jsonl").exists()

    (out / "annotations.json").write_text("{}")
    start_state(out, meta, resume=True)
    assert (out / "annotations.json").exists()
    start_state(out, {**meta, "formats": ["yolo"]}, resume=False)  # --exist-ok: starts over
    assert not (out / "annotations.json").exists()
    assert not (out / ".mrseg" / "records-0.jsonl").exists()
    assert json.loads((out / ".mrseg" / "run.json").read_text())["formats"] == ["yolo"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        resolve_out_dir(tmp_path / "file", exist_ok=True, resume=False)
