"""What a SIGKILL leaves in the run folder, found by the kill campaign (tests/cli/test_kill_anywhere.py):
temporary files of outputs being written when the run died are removed when the folder is taken up again,
and a run killed before it wrote run.json (OUT/.mrseg exists from the lock on) can be resumed."""

from __future__ import annotations

import pytest

from mrseg.engine.predict import journal
from mrseg.engine.predict.run_folder import RunFolderError, remove_stale_temps, start_state
from mrseg.engine.predict.run_lock import RunLock
from mrseg.outputs.atomic import temp_sibling

META = {"sources": ["imgs"], "vid_stride": 1, "formats": ["coco", "labelme", "yolo", "overlay"]}


def _leftovers(out):
    """Temporary names as the writers make them (outputs.atomic.temp_sibling; the YOLO image link's own)."""
    paths = [
        temp_sibling(out / "predictions.jsonl"),
        temp_sibling(out / "labelme" / "sub" / "a.json"),
        temp_sibling(out / "overlay" / "clip.mp4", ".tmp.mp4"),
        out / "yolo" / "images" / ".a.jpg.4242.tmp",
    ]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
    return paths


@pytest.mark.parametrize("resume", [True, False])
def test_a_killed_runs_temporary_files_are_removed_when_the_folder_is_taken_up(tmp_path, resume):
    out = tmp_path / "out"
    start_state(out, META, resume=False)
    keep = [out / "labelme" / "a.json", out / ".hidden", out / "notes.tmp", out / "labelme" / ".x.tmp"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("keep")
    stale = _leftovers(out)
    start_state(out, META, resume=resume)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in keep)


def test_remove_stale_temps_counts_and_ignores_other_folders(tmp_path):
    out = tmp_path / "out"
    elsewhere = temp_sibling(out / "mine" / "x.json")
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("not ours")
    assert remove_stale_temps(out) == 0
    _leftovers(out)
    assert remove_stale_temps(out) == 4
    assert elsewhere.exists()


def test_resume_of_a_run_killed_before_run_json_starts_it(tmp_path, capsys):
    out = tmp_path / "out"
    RunLock.acquire(out).release()  # what the kill left: OUT/.mrseg with the lock file only
    start_state(out, META, resume=True)
    assert "starting it" in capsys.readouterr().err
    start_state(out, META, resume=True)  # now a run to resume
    # but a run that journaled something and lost its run.json is still refused
    journal.records_path(out, 0).write_text('{"image": {"id": 1}, "instances": []}\n')
    (out / journal.STATE_DIR / "run.json").unlink()
    with pytest.raises(RunFolderError, match="missing or unreadable"):
        start_state(out, META, resume=True)
