"""Where a run writes: runs/predict, runs/predict2, ...; what --resume and --exist-ok may do with a folder."""

import json

import pytest

from mrseg.engine.predict.run_folder import RunFolderError, resolve_out_dir, start_state


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


def _items(*paths):
    from mrseg.outputs.detections import InputItem

    return [InputItem(id=i, path=p, rel_path=p.rsplit("/", 1)[-1]) for i, p in enumerate(paths, start=1)]


def test_resume_with_other_inputs_is_refused_and_says_what_changed(tmp_path):
    out = tmp_path / "out"
    meta = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco"]}
    start_state(out, meta, resume=False, items=_items("imgs/a.jpg", "imgs/c.jpg"))
    saved = json.loads((out / ".mrseg" / "run.json").read_text())
    assert saved["inputs"]["count"] == 2 and len(saved["inputs"]["sha256"]) == 64
    start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/c.jpg"))  # same inputs: accepted

    with pytest.raises(RunFolderError) as err:
        start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"))
    msg = str(err.value)
    assert "had 2 input(s)" in msg and "now list 3" in msg and "1 new: 'imgs/b.jpg'" in msg
    assert "first changed id: 2 was 'imgs/c.jpg', now 'imgs/b.jpg'" in msg and "start a new run" in msg
    # A renamed file: same count, one gone, one new.
    with pytest.raises(RunFolderError, match=r"1 new: 'imgs/z.jpg'; 1 gone: 'imgs/c.jpg'"):
        start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/z.jpg"))
    # The listing file lost: still refused, on the fingerprint alone.
    (out / ".mrseg" / "inputs.jsonl").unlink()
    with pytest.raises(RunFolderError, match="what changed is unknown"):
        start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/b.jpg"))


def test_resume_of_a_run_from_before_fingerprints_checks_the_count(tmp_path):
    out = tmp_path / "out"
    meta = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco"], "num_items": 2}
    start_state(out, meta, resume=False)  # as older versions wrote run.json: no "inputs"
    start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/c.jpg"))
    with pytest.raises(RunFolderError, match="inputs differ"):
        start_state(out, meta, resume=True, items=_items("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"))


@pytest.mark.parametrize(
    "key, now, said",
    [("precision", "bf16", "--precision differ"), ("fused", False, "(was --fuse, now --no-fuse)")],
)
def test_resume_with_another_precision_or_fusion_is_refused(tmp_path, key, now, said):
    """Half a run's files from one model arithmetic and half from another would pass for one run."""
    out = tmp_path / "out"
    meta = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco"], "precision": "fp32", "fused": True}
    start_state(out, meta, resume=False, items=_items("imgs/a.jpg"))
    start_state(out, meta, resume=True, items=_items("imgs/a.jpg"))
    with pytest.raises(RunFolderError, match=r"differ from the run .*start a new run") as err:
        start_state(out, {**meta, key: now}, resume=True, items=_items("imgs/a.jpg"))
    assert said in str(err.value)


def test_resume_of_a_run_that_recorded_no_fusion_is_accepted(tmp_path):
    out = tmp_path / "out"
    old = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco"]}  # as run.json was before `fused`
    start_state(out, old, resume=False, items=_items("imgs/a.jpg"))
    start_state(out, {**old, "precision": "fp32", "fused": False}, resume=True, items=_items("imgs/a.jpg"))
