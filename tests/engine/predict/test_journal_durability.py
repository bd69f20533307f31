"""Durability (issue 13.9): a journal line never reaches the disk before the files it names. The journal
holds its lines and commits them in batches: sync the output folder's file system, then write and fsync the
lines. Checked by recording, at every sync, which output files exist (and with what bytes) and which journal
lines are already on disk: every line must first appear after a sync that saw all of its input's files in
their final form. The overlay segment of a video is flushed before the manifest that vouches for it.
Photos shrunk to 96x72, the tiny seeded model of conftest.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrseg.engine.predict import journal
from mrseg.engine.predict.run import predict
from mrseg.outputs import video_segments

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py

PER_ITEM = {"labelme": ".json", "yolo/labels": ".txt", "overlay": ".jpg"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(out: Path) -> dict[str, str]:
    return {
        f"{folder}/{p.name}": _digest(p)
        for folder, suffix in PER_ITEM.items()
        for p in (out / folder).glob(f"*{suffix}")
    }


def _journal_lines(out: Path) -> set[str]:
    lines = set()
    for path in journal.all_records_paths(out):
        lines.update(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True))
    return lines


@pytest.mark.parametrize("commit_every", [0.0, 3600.0])  # a sync per line; one batch at close
def test_every_journal_line_lands_after_a_sync_that_saw_its_files(
    tiny_weights, nuts_images, tmp_path, monkeypatch, commit_every
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in nuts_images[:4]:
        cv2.imwrite(str(photos / p.name), cv2.resize(cv2.imread(str(p)), (96, 72)))
    out = tmp_path / "out"
    syncs: list[tuple[dict[str, str], set[str]]] = []  # (output files, journal lines on disk) at each sync

    def recording_sync(folder: Path) -> None:
        syncs.append((_outputs(out), _journal_lines(out)))

    monkeypatch.setattr(journal, "sync_filesystem", recording_sync)
    monkeypatch.setattr(journal, "COMMIT_SECONDS", commit_every)
    predict([str(photos)], weights=tiny_weights, out=out, score=0.2, workers=0, quiet=True,
            formats="coco,labelme,yolo,overlay")  # fmt: skip

    final_files = _outputs(out)
    final_lines = _journal_lines(out)
    assert len(final_lines) == 4 and len(final_files) == 12
    assert syncs, "the journal never synced the outputs before committing its lines"
    for line in final_lines:
        stem = Path(json.loads(line)["image"]["file_name"]).stem
        names = [f"{folder}/{stem}{suffix}" for folder, suffix in PER_ITEM.items()]
        first_seen = next((j for j, (_, lines) in enumerate(syncs) if line in lines), len(syncs))
        assert first_seen >= 1, f"{stem}: its journal line was on disk before any sync"
        seen_files = syncs[first_seen - 1][0]
        for name in names:  # the last sync before the line was written saw the file, in its final bytes
            assert seen_files.get(name) == final_files[name], f"{name} was not synced before its journal line"
    if commit_every > 100:  # the first line at once, the other three in one batch at close (none for the
        assert len(syncs) == 2  # empty failure log)


def test_lines_are_held_until_a_commit_and_the_sync_comes_first(tmp_path):
    events = []
    path = tmp_path / "records-0.jsonl"
    log = journal.AppendLog(path, commit_every=3600, sync=lambda f: events.append(("sync", path.read_text())))
    log.append({"id": 1})  # the first line commits at once (nothing committed for over an hour)
    log.append({"id": 2})
    log.append({"id": 3})
    assert path.read_text() == '{"id": 1}\n'  # 2 and 3 held
    log.close()
    assert path.read_text() == '{"id": 1}\n{"id": 2}\n{"id": 3}\n'
    # each sync came before its batch reached the file
    assert events == [("sync", ""), ("sync", '{"id": 1}\n')]


def test_a_video_segment_is_flushed_before_its_manifest(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(video_segments, "fsync_path", lambda p: events.append(("fsync", Path(p).suffix)))
    write_text = video_segments.atomic_write_text

    def recording_write(p, text):
        events.append(("write", Path(p).name))
        write_text(p, text)

    monkeypatch.setattr(video_segments, "atomic_write_text", recording_write)
    parts = tmp_path / "v.parts"
    for _ in range(2):  # two segments: the joined video is flushed before the stamp says it is built
        seg = video_segments.SegmentWriter(parts, 10.0, (32, 24))
        for i in range(3):
            seg.write(np.full((24, 32, 3), 40 * i, np.uint8), i, i + 1)
        seg.commit()
    video_segments.assemble(parts, tmp_path / "v.mp4")
    assert events[:2] == [("fsync", ".mp4"), ("write", "part-0001.json")]
    assert events[2:4] == [("fsync", ".mp4"), ("write", "part-0002.json")]
    assert events[4:] == [("fsync", ".mp4"), ("write", "assembled.json")]
