"""OutputSink, the writer fan-out of a predict run, with stand-in writers: each input goes to every per-item
writer once, in order, and only then gets its journal line; a writer's error makes that input a failure record
(its files so far removed) while the other inputs go on, except errors every input would hit (disk full,
a broken stdout); a video's end commits the journal before its overlay. The journal lines are checked with
pycocotools (the masks' RLE). test_predict_write_errors.py covers the same through `predict`."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mrseg.engine.predict import journal
from mrseg.engine.predict.sink import OutputSink, describe_failure
from mrseg.outputs.detections import Detections, InputItem

CLASSES = [{"id": 1, "name": "date"}, {"id": 7, "name": "fig"}]


class Progress:
    def __init__(self):
        self.advanced, self.said = [], []

    def advance(self, n: int = 1, **fields) -> None:
        self.advanced.append(fields)

    def say(self, message: str) -> None:
        self.said.append(message)


class Writer:
    """A per-item writer that logs its calls in `events` and writes `OUT/<name>/<item name>.txt`; raises
    `errors[item id]` for that item."""

    def __init__(self, name, events, out_dir, errors=None):
        self.name, self.events, self.out_dir, self.errors = name, events, out_dir, errors or {}
        self.got = []

    def path_for(self, item):
        return self.out_dir / self.name / f"{item.name}.txt"

    def write(self, item, image, det, instances):
        self.events.append((self.name, item.id))
        self.got.append((item.id, image, det, instances))
        path = self.path_for(item)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(len(instances)))
        if item.id in self.errors:
            raise self.errors[item.id]

    def close(self):
        self.events.append((self.name, "close"))


class Journal:
    """Logs the sink's journal lines in `events`, then hands them to the real journal."""

    def __init__(self, log, events):
        self.log, self.events = log, events

    def append_line(self, line):
        self.events.append(("journal", json.loads(line)["image"]["id"]))
        self.log.append_line(line)

    def __getattr__(self, name):
        return getattr(self.log, name)


def make_sink(tmp_path, *, stream=False, formats=(), mask_format="rle", quiet=False) -> OutputSink:
    return OutputSink(
        out_dir=tmp_path, rank=0, formats=list(formats), classes=CLASSES, mask_format=mask_format,
        simplify=0.0, vid_stride=1, stream=stream, progress=Progress(), quiet=quiet,
    )  # fmt: skip


def item(i: int, frame: int | None = None) -> InputItem:
    if frame is None:
        return InputItem(id=i, path=f"/data/img{i}.jpg", rel_path=f"img{i}.jpg", name=f"img{i}")
    return InputItem(id=i, path="/data/clip.mp4", rel_path=f"clip/{frame:06d}.jpg", frame=frame,
                     video="clip.mp4", fps=10.0, name=f"clip/{frame:06d}")  # fmt: skip


def detections(seed: int) -> Detections:
    rng = np.random.default_rng(seed)
    masks = np.zeros((2, 12, 16), bool)
    masks[0, 2:7, 3:9] = True
    masks[1] = rng.random((12, 16)) > 0.6
    return Detections(
        width=16, height=12, boxes=np.array([[3, 2, 9, 7], [0, 0, 16, 12]], np.float32),
        scores=np.array([0.9, 0.4], np.float32), labels=np.array([2, 1]), masks=masks,
    )  # fmt: skip


def json_lines(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def journal_lines(tmp_path) -> list[dict]:
    return json_lines(journal.records_path(tmp_path, 0))


def failure_lines(tmp_path) -> list[dict]:
    return json_lines(journal.failures_path(tmp_path, 0))


def with_writers(sink: OutputSink, tmp_path, *names, errors=None) -> list:
    events: list = []
    sink.item_writers = [Writer(n, events, tmp_path, (errors or {}).get(n)) for n in names]
    if sink.journal is not None:
        sink.journal = Journal(sink.journal, events)
    return events


def test_each_input_goes_to_every_writer_once_then_to_the_journal(tmp_path):
    sink = make_sink(tmp_path)
    events = with_writers(sink, tmp_path, "a", "b")
    image = np.zeros((12, 16, 3), np.uint8)
    dets = {i: detections(i) for i in (1, 2, 3)}
    for i in (1, 2, 3):
        sink(("ok", item(i), image, dets[i]))
    sink.close()
    closes = [("a", "close"), ("b", "close")]
    assert events == [(w, i) for i in (1, 2, 3) for w in ("a", "b", "journal")] + closes
    for writer in sink.item_writers:
        assert [g[0] for g in writer.got] == [1, 2, 3]
        assert all(g[1] is image and g[2] is dets[g[0]] for g in writer.got)
    assert sink.item_writers[0].got[0][3] is sink.item_writers[1].got[0][3]  # one set of records per input
    lines = journal_lines(tmp_path)
    assert [line["image"] for line in lines] == [
        {"id": i, "file_name": f"img{i}.jpg", "width": 16, "height": 12} for i in (1, 2, 3)
    ]
    for line in lines:
        det = dets[line["image"]["id"]]
        assert [inst["category_id"] for inst in line["instances"]] == [7, 1]
        for inst, mask in zip(line["instances"], det.masks, strict=True):
            assert "polygons" not in inst
            np.testing.assert_array_equal(mask_utils.decode(inst["segmentation"]).astype(bool), mask)
    assert (sink.processed, sink.instances, sink.failed) == (3, 6, 0)
    assert len(sink.progress.advanced) == 3 and failure_lines(tmp_path) == []


def test_polygons_are_recorded_only_for_an_annotations_json_that_holds_them(tmp_path):
    assert make_sink(tmp_path / "1", formats=["coco"], mask_format="polygon").mask_format == "polygon"
    assert make_sink(tmp_path / "2", formats=["coco"], mask_format="rle").mask_format == "rle"
    assert make_sink(tmp_path / "3", formats=["jsonl"], mask_format="polygon").mask_format == "rle"
    streamed = make_sink(tmp_path / "4", stream=True, formats=["coco"], mask_format="polygon")
    assert streamed.mask_format == "rle"


def test_a_writer_error_fails_that_input_only_and_takes_back_its_files(tmp_path):
    sink = make_sink(tmp_path)
    events = with_writers(sink, tmp_path, "a", "b", "c", errors={"b": {2: ValueError("cannot encode")}})
    for i in (1, 2, 3):
        sink(("ok", item(i), None, detections(i)))
    sink.close()
    # input 2: a and b wrote, b failed; c (later, e.g. an overlay that can't be taken back) never saw it
    assert [e for e in events if e[1] == 2] == [("a", 2), ("b", 2)]
    others = [e for e in events if e[1] in (1, 3)]
    assert others == [(w, i) for i in (1, 3) for w in ("a", "b", "c", "journal")]
    assert not (tmp_path / "a" / "img2.txt").exists() and not (tmp_path / "b" / "img2.txt").exists()
    assert all((tmp_path / w / f"img{i}.txt").exists() for w in "abc" for i in (1, 3))
    assert [line["image"]["id"] for line in journal_lines(tmp_path)] == [1, 3]
    reason = "writing its outputs failed: ValueError: cannot encode"
    failure = {"id": 2, "path": "/data/img2.jpg", "file_name": "img2.jpg", "reason": reason}
    assert failure_lines(tmp_path) == [failure]
    assert (sink.processed, sink.failed) == (2, 1)
    assert sink.progress.said == [f"warning: skipped /data/img2.jpg: {reason}"]
    assert sink.progress.advanced[-1] == {}  # the last input went on


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO])
def test_an_error_every_input_would_hit_ends_the_run(tmp_path, code):
    sink = make_sink(tmp_path)
    with_writers(sink, tmp_path, "a", errors={"a": {1: OSError(code, "no way")}})
    with pytest.raises(OSError, match="no way"):
        sink(("ok", item(1), None, detections(1)))
    assert sink.failed == 0


def test_an_os_error_of_one_input_fails_that_input(tmp_path):
    sink = make_sink(tmp_path)
    with_writers(sink, tmp_path, "a", errors={"a": {1: OSError(errno.ENAMETOOLONG, "File name too long")}})
    sink(("ok", item(1), None, detections(1)))
    sink(("ok", item(2), None, detections(2)))
    assert (sink.processed, sink.failed) == (1, 1)


def test_streaming_writes_public_lines_to_stdout_and_stops_when_stdout_does(tmp_path, capsys):
    sink = make_sink(tmp_path, stream=True)
    assert sink.journal is None and sink.failure_log is None
    sink(("ok", item(1), None, detections(1)))
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["image"]["id"] == 1 and len(line["instances"]) == 2
    assert not list(tmp_path.iterdir())  # nothing written to OUT
    for error in (OSError(errno.EACCES, "Permission denied"), ValueError("I/O operation on closed file.")):
        with_writers(sink, tmp_path, "stdout", errors={"stdout": {2: error}})
        with pytest.raises(type(error)):
            sink(("ok", item(2), None, detections(2)))
    with_writers(sink, tmp_path, "stdout", errors={"stdout": {3: ValueError("a bad record")}})
    sink(("ok", item(3), None, detections(3)))
    assert sink.failed == 1 and sink.failures[0]["reason"].endswith("a bad record")


def test_inputs_that_could_not_be_read_become_failure_records(tmp_path):
    sink = make_sink(tmp_path, quiet=True)
    for i in range(25):
        sink(("fail", item(i), f"/data/img{i}.jpg: file not found", None))
    sink(("fail", item(30, frame=8), "cannot decode", None))
    sink.close()
    failures = failure_lines(tmp_path)
    assert len(failures) == 26 and sink.failed == 26
    assert failures[0] == {"id": 0, "path": "/data/img0.jpg", "file_name": "img0.jpg",
                           "reason": "/data/img0.jpg: file not found"}  # fmt: skip
    assert failures[-1]["frame"] == 8
    assert sink.failures == failures[:20]  # the summary keeps the first 20
    assert sink.progress.said == []  # quiet
    assert sink.progress.advanced[-1] == {"failed": 26}


class OverlayLike(Writer):
    """A writer that also holds a video's frames until `end_video` (as OverlayWriter does)."""

    def __init__(self, *args, end_error=None, journal_path=None, **kw):
        super().__init__(*args, **kw)
        self.end_error, self.journal_path, self.ended = end_error, journal_path, []

    def end_video(self, item):
        on_disk = self.journal_path.read_text(encoding="utf-8").splitlines()
        self.ended.append((item.id, [json.loads(x)["image"]["id"] for x in on_disk]))
        if self.end_error is not None:
            raise self.end_error


def test_a_videos_end_commits_its_journal_lines_before_its_overlay(tmp_path):
    sink = make_sink(tmp_path)
    events = with_writers(sink, tmp_path, "a")
    overlay = OverlayLike("overlay", events, tmp_path, journal_path=journal.records_path(tmp_path, 0))
    sink.item_writers.append(overlay)
    for i, frame in enumerate((0, 2, 4), start=1):
        sink(("ok", item(i, frame), np.zeros((12, 16, 3), np.uint8), detections(i)))
    sink(("end", item(3, 4), None, None))
    assert overlay.ended == [(3, [1, 2, 3])]  # every frame's line on disk when the overlay is committed
    assert [line["image"]["frame"] for line in journal_lines(tmp_path)] == [0, 2, 4]


def test_a_failed_overlay_is_reported_not_fatal_unless_every_input_would_fail(tmp_path):
    sink = make_sink(tmp_path)
    with_writers(sink, tmp_path)
    records = journal.records_path(tmp_path, 0)
    overlay = OverlayLike("overlay", [], tmp_path, journal_path=records, end_error=ValueError("codec"))
    sink.item_writers = [overlay]
    sink(("ok", item(1, 0), None, detections(1)))
    sink(("end", item(1, 0), None, None))
    assert sink.progress.said == ["warning: the overlay video of /data/clip.mp4 could not be written: codec"]
    sink.item_writers[0].end_error = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        sink(("end", item(1, 0), None, None))


def test_a_failed_video_frame_keeps_its_overlay_frame_and_loses_its_other_files(tmp_path):
    """The overlay's frame is in the video being encoded (it can't be taken out; `--resume` redoes it)."""
    sink = make_sink(tmp_path)
    events = with_writers(sink, tmp_path, "a", errors={"a": {1: ValueError("x")}})
    records = journal.records_path(tmp_path, 0)
    overlay = OverlayLike("overlay", events, tmp_path, journal_path=records)
    sink.item_writers.insert(0, overlay)
    sink(("ok", item(1, 0), None, detections(1)))
    assert (tmp_path / "overlay" / "clip" / "000000.txt").exists()
    assert not (tmp_path / "a" / "clip" / "000000.txt").exists()
    assert sink.failed == 1


def test_close_closes_every_writer_and_the_journals_then_raises_the_first_error(tmp_path):
    sink = make_sink(tmp_path)
    events = with_writers(sink, tmp_path, "a", "b", "c")
    sink(("ok", item(1), None, detections(1)))
    sink(("ok", item(2), None, detections(2)))  # held by the journal until its next commit
    sink(("fail", item(3), "bad", None))

    def broken():
        events.append(("b", "close"))
        raise OSError(errno.EIO, "close failed")

    sink.item_writers[1].close = broken
    with pytest.raises(OSError, match="close failed"):
        sink.close()
    assert events[-3:] == [("a", "close"), ("b", "close"), ("c", "close")]
    assert [line["image"]["id"] for line in journal_lines(tmp_path)] == [1, 2]
    assert [f["id"] for f in failure_lines(tmp_path)] == [3]


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        ({"path": "/d/a.jpg", "reason": "bad header"}, "/d/a.jpg: bad header"),
        ({"path": "/d/a.jpg", "reason": "/d/a.jpg: file not found"}, "/d/a.jpg: file not found"),
        ({"path": "/d/v.mp4", "frame": 12, "reason": "cannot decode"}, "/d/v.mp4 frame 12: cannot decode"),
        ({"path": "/d/v.mp4", "frame": 0, "reason": "/d/v.mp4 frame 0: ended"}, "/d/v.mp4 frame 0: ended"),
    ],
)
def test_describe_failure_names_the_input_once(failure, text):
    assert describe_failure(failure) == text
