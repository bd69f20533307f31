"""The run journal: torn last lines are cut, done ids and each video's last frame are read back."""

import json

from mrseg.engine.predict import journal


def _line(image_id, track_ids=(), **image):
    instances = [{"track_id": t, "bbox": [0, 0, 1, 1], "label": 1} for t in track_ids]
    return json.dumps({"image": {"id": image_id, **image}, "instances": instances}) + "\n"


def test_repair_cuts_only_a_torn_last_line(tmp_path):
    path = tmp_path / "records-0.jsonl"
    whole = _line(1) + _line(2)
    path.write_text(whole + _line(3)[:10])
    assert journal.repair(path) == 10
    assert path.read_text() == whole
    assert journal.repair(path) == 0 and path.read_text() == whole
    path.write_text('{"image": {"id"')  # no complete line at all
    journal.repair(path)
    assert path.read_text() == ""
    big = "".join(_line(i) for i in range(5000))  # the newline search crosses block boundaries
    path.write_text(big + "x" * 100_000)
    journal.repair(path)
    assert path.read_text() == big


def test_read_state_collects_done_failed_and_last_video_frames(tmp_path):
    out = tmp_path
    (out / journal.STATE_DIR).mkdir()
    journal.records_path(out, 0).write_text(
        _line(1) + _line(3, (12,), video="v.mp4", frame=0) + _line(4, video="v.mp4", frame=2)
        + "garbage\n"
        + _line(9)[:5]
    )
    journal.records_path(out, 1).write_text(_line(2) + _line(5, (3,), video="v.mp4", frame=4))
    log = journal.AppendLog(journal.failures_path(out, 1))
    log.append({"id": 7, "path": "x.jpg", "reason": "bad"})
    log.close()
    state = journal.read_state(out)
    assert state.done_ids == {1, 2, 3, 4, 5}
    assert state.failed_ids == {7}
    assert state.last_frames["v.mp4"]["frame"] == 4
    assert state.max_track_ids["v.mp4"] == 12

    log = journal.AppendLog(journal.failures_path(out, 0))
    log.append({"id": 6, "path": "y.jpg", "reason": "worse"})
    log.close()
    assert journal.merge_failures(out) == 2
    rows = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [6, 7]
