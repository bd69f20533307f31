"""The run journal: what `--resume` trusts, and the only source of the final files.

`OUT/.mrseg/records-<rank>.jsonl` gets one line per finished input,
`{"image": {"id", "file_name", "width", "height", ["video", "frame"]}, "instances": [records...]}`, appended
after the input's per-item files are in place, so a line present means the input is complete. Lines are
held in memory and committed in batches (`AppendLog`): the output folder's file system is synced first, then
the batch is appended and fsync'ed, so even after a power loss a journal line never names a file that did
not reach the disk. A kill can only tear the last line (`repair` cuts it); it loses the lines held since the
last commit (at most ~2 s of work), whose inputs `--resume` predicts again. A video frame's overlay is the
exception: it goes into the video's segment, committed after the journal lines of its frames
(`OutputSink._end_video`); a frame journaled but in no committed segment is redone.
`OUT/.mrseg/failures-<rank>.jsonl` gets one line per input that could not be read. `run.json` records what
the ids depend on, so a resume with other sources is refused instead of mixing two runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from mrseg.outputs.atomic import atomic_open, atomic_write_text
from mrseg.outputs.paths import STATE_DIR


def records_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"records-{rank}.jsonl"


def failures_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"failures-{rank}.jsonl"


# `records-<rank>.jsonl` (the current generation) or `records-g<G>-<rank>.jsonl` (generation G, archived by
# `archive_generation` when a resume runs with another number of ranks).
_JOURNAL_NAME = re.compile(r"(?:records|failures)-(?:g(\d+)-)?(\d+)\.jsonl")


def merge_order_key(path: Path) -> tuple:
    """Sort key putting journal files oldest first: archived generations by number, the current one last; the
    ranks of a generation by their number (`records-2` before `records-10`). Readers let a later file's line
    win over an earlier one's for the same id, so the most recent line of an input is the one kept."""
    m = _JOURNAL_NAME.fullmatch(Path(path).name)
    if m is None:  # not a name mrseg writes: oldest, so it never overrides a real journal
        return (-1, -1, Path(path).name)
    gen = int(m.group(1)) if m.group(1) is not None else float("inf")
    return (gen, int(m.group(2)), "")


def _journal_files(out_dir: Path, kind: str) -> list[Path]:
    found = (Path(p) for p in glob.glob(str(Path(out_dir) / STATE_DIR / f"{kind}-*.jsonl")))
    return sorted(found, key=merge_order_key)


def all_records_paths(out_dir: Path) -> list[Path]:
    """Every record journal of the run, oldest first (`merge_order_key`): a later line of an id wins."""
    return _journal_files(out_dir, "records")


def all_failures_paths(out_dir: Path) -> list[Path]:
    """Every failure log of the run, oldest first (`merge_order_key`)."""
    return _journal_files(out_dir, "failures")


def archive_generation(out_dir: Path) -> int:
    """Rename the current journals `records-<r>.jsonl` / `failures-<r>.jsonl` to `...-g<G>-<r>.jsonl`, G one
    more than any archived generation; returns how many files were renamed. Within one generation (one number
    of ranks) an input always goes to the same rank; a resume with another number of ranks may give it to
    another rank, so its journals start a generation that `merge_order_key` puts after the archived ones."""
    state = Path(out_dir) / STATE_DIR
    current, gens = [], [0]
    for p in state.glob("*-*.jsonl"):
        m = _JOURNAL_NAME.fullmatch(p.name)
        if m is None:
            continue
        if m.group(1) is None:
            current.append((p, m.group(2)))
        else:
            gens.append(int(m.group(1)))
    gen = max(gens) + 1
    for p, rank in current:
        kind = p.name.split("-", 1)[0]
        os.replace(p, p.with_name(f"{kind}-g{gen}-{rank}.jsonl"))
    return len(current)


def repair(path: Path) -> int:
    """Cut a torn last line (no trailing newline, e.g. after kill -9) off a journal; returns the bytes cut."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        # Scan back in blocks for the last newline; everything after it is a partial line.
        pos, keep = size, 0
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            idx = f.read(step).rfind(b"\n")
            if idx >= 0:
                keep = pos - step + idx + 1
                break
            pos -= step
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def iter_lines(path: Path):
    """Parsed JSON objects of a journal file; a torn or garbled line is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


@dataclass
class ResumeState:
    """What earlier runs into the same folder finished: ids to skip, and each video's last journaled frame."""

    done_ids: set[int] = field(default_factory=set)
    failed_ids: set[int] = field(default_factory=set)
    last_frames: dict[str, dict] = field(default_factory=dict)  # video -> {"frame": int, "instances": [...]}
    max_track_ids: dict[str, int] = field(default_factory=dict)  # video -> the highest track id it used


def read_state(out_dir: Path, exclude: Collection[int] = ()) -> ResumeState:
    """What the journals of `out_dir` say is done; the image ids in `exclude` count as not done (to redo)."""
    state = ResumeState()
    for path in all_records_paths(out_dir):
        for rec in iter_lines(path):
            image = rec.get("image", {})
            if int(image["id"]) in exclude:
                continue
            state.done_ids.add(int(image["id"]))
            video, frame = image.get("video"), image.get("frame")
            if video is not None and frame is not None:
                last = state.last_frames.get(video)
                if last is None or frame > last["frame"]:
                    state.last_frames[video] = {"frame": frame, "instances": rec.get("instances", [])}
                ids = [int(r["track_id"]) for r in rec.get("instances", []) if r.get("track_id") is not None]
                state.max_track_ids[video] = max([state.max_track_ids.get(video, 0), *ids])
    for path in all_failures_paths(out_dir):
        for rec in iter_lines(path):
            state.failed_ids.add(int(rec["id"]))
    return state


def unaccounted(out_dir: Path, ids: Collection[int]) -> tuple[int, set[int]]:
    """(how many of `ids` no journal of `out_dir` marks done or failed, the ranks of the current journals)."""
    state = read_state(out_dir)
    left = set(ids) - state.done_ids - state.failed_ids
    paths = all_records_paths(out_dir) + all_failures_paths(out_dir)
    found = [_JOURNAL_NAME.fullmatch(p.name) for p in paths]
    return len(left), {int(m.group(2)) for m in found if m is not None and m.group(1) is None}


def sync_filesystem(folder: Path) -> None:
    """Make everything written on `folder`'s file system durable (data and names): Linux `syncfs` on that
    file system only, else `os.sync` (all of them). One call per batch of journal lines costs what one fsync
    costs, instead of one fsync per output file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _syncfs is not None and _syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


def _find_syncfs():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None)
    except OSError:
        return None


_syncfs = _find_syncfs()

COMMIT_SECONDS = 2.0  # how long a journal line may wait for the files it names to be synced


class AppendLog:
    """An append-only JSON-lines file whose lines are held and committed in batches (see the module): at the
    first append `commit_every` seconds after the last commit, and at `close`; at a slow rate (an input every
    `commit_every` s or less often) each line is committed as it comes."""

    def __init__(
        self, path: Path, commit_every: float | None = None, sync: Callable[[Path], None] | None = None
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self._commit_every = COMMIT_SECONDS if commit_every is None else commit_every
        self._sync = sync_filesystem if sync is None else sync
        self._held: list[str] = []
        self._last_commit = -float("inf")

    def append(self, obj: dict) -> None:
        self.append_line(json.dumps(obj, ensure_ascii=False) + "\n")

    def append_line(self, line: str) -> None:
        """Append one newline-terminated JSON line (held until the next commit)."""
        self._held.append(line)
        if time.monotonic() - self._last_commit >= self._commit_every:
            self.commit()

    def commit(self) -> None:
        """Sync the folder's file system, then write the held lines and fsync the log."""
        if not self._held:
            return
        self._sync(self.path.parent)
        self._f.write("".join(self._held))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._held.clear()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self.commit()
        finally:
            self._f.close()


def write_json_atomic(path: Path, obj) -> None:
    """`obj` as JSON in `path`, atomically and on disk (the run's state files)."""
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False), fsync=True)


def merge_failures(out_dir: Path) -> int:
    """Write OUT/failures.jsonl from every rank's failure log, sorted by id, atomically; returns the count.

    An input that failed in one run and was predicted by a later one (`--resume` tries failures again) is
    no failure; of several failures of one input, the latest reason is kept."""
    rows = {}
    for path in all_failures_paths(out_dir):
        for rec in iter_lines(path):
            rows[int(rec["id"])] = rec
    if rows:
        for done in read_state(out_dir).done_ids & rows.keys():
            del rows[done]
    target = Path(out_dir) / "failures.jsonl"
    if not rows:
        target.unlink(missing_ok=True)
        return 0
    with atomic_open(target, "w", fsync=True) as f:
        for key in sorted(rows):
            f.write(json.dumps(rows[key], ensure_ascii=False) + "\n")
    return len(rows)
