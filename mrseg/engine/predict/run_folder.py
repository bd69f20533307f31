"""Where a predict run writes: `runs/predict`, `runs/predict2`, ... and what a resume may continue."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mrseg.engine.predict.journal import STATE_DIR, archive_generation, write_json_atomic
from mrseg.engine.predict.owned_outputs import owned_paths, remove_owned, write_owned
from mrseg.engine.predict.run_lock import LOCK_NAME, RunLock, lock_path, same_lock
from mrseg.engine.run_dirs import next_run_dir, numbered_dirs
from mrseg.outputs.atomic import atomic_write_text
from mrseg.outputs.formats import final_files, item_folders

if TYPE_CHECKING:
    from mrseg.outputs.detections import InputItem

DEFAULT_OUT = Path("runs") / "predict"
FINAL_FILES = (*final_files(), "failures.jsonl")


class RunFolderError(ValueError):
    """The output folder can't be used as asked (names the folder and what to do)."""


def resolve_out_dir(out: str | Path | None, *, exist_ok: bool, resume: bool) -> Path:
    """The folder this run writes to.

    No `out`: `runs/predict`, or the next free `runs/predictN` (with `resume`: the latest existing one).
    An explicit `out` is used as given; if it already holds a run, `resume` or `exist_ok` must say what to do.
    """
    if out is None:
        if not resume:
            return next_run_dir(DEFAULT_OUT, exist_ok)
        runs = numbered_dirs(DEFAULT_OUT)
        if not runs:
            raise RunFolderError(
                f"--resume: no earlier run in {DEFAULT_OUT.parent}/; pass --out DIR of the run"
            )
        return runs[-1]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: exists and is not a folder; choose another --out")
    started = (out / STATE_DIR).is_dir()
    # a run that stopped before run.json (it failed to start) left nothing to keep or continue
    has_run = started and any((out / STATE_DIR).iterdir())
    if resume and not started:
        raise RunFolderError(f"--resume: {out} holds no earlier run (no {STATE_DIR}/ in it); drop --resume")
    if has_run and not (resume or exist_ok):
        with contextlib.suppress(OSError):  # a live run's folder: RunLockError says so
            RunLock.acquire(out).release()
        raise RunFolderError(
            f"--out {out} already holds a predict run; pass --resume to continue it, "
            "--exist-ok to start over in it, or choose another --out"
        )
    return out


# In OUT/.mrseg: one [id, path, frame] line per input, the listing that run.json's "inputs" fingerprints.
INPUTS_FILE = "inputs.jsonl"


def inputs_fingerprint(listing: Sequence[Sequence]) -> dict:
    """`{"count", "sha256"}` of an input listing (`[id, path, frame]` per input), for run.json."""
    h = hashlib.sha256()
    for row in listing:
        h.update(json.dumps(list(row), ensure_ascii=False).encode("utf-8") + b"\n")
    return {"count": len(listing), "sha256": h.hexdigest()}


def _describe(row: Sequence) -> str:
    _, path, frame = row
    return f"{path!r}" if frame is None else f"{path!r} frame {frame}"


def _inputs_changed(out_dir: Path, new: list[list]) -> str:
    """What differs between the listing a run started with (`INPUTS_FILE`) and `new`, in a few lines."""
    path, lines = out_dir / STATE_DIR / INPUTS_FILE, []
    try:
        old = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError):
        old = None
    if old is None:
        lines.append(f"{path} is missing or unreadable: what changed is unknown")
    else:
        lines.append(f"the run had {len(old)} input(s), the SOURCE arguments now list {len(new)}")
        old_keys = {(r[1], r[2]) for r in old}
        new_keys = {(r[1], r[2]) for r in new}
        added = [r for r in new if (r[1], r[2]) not in old_keys]
        removed = [r for r in old if (r[1], r[2]) not in new_keys]
        for what, rows in (("new", added), ("gone", removed)):
            if rows:
                shown = ", ".join(_describe(r) for r in rows[:3])
                more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
                lines.append(f"{len(rows)} {what}: {shown}{more}")
        for a, b in zip(old, new, strict=False):
            if (a[1], a[2]) != (b[1], b[2]):
                lines.append(f"first changed id: {a[0]} was {_describe(a)}, now {_describe(b)}")
                break
    return "; ".join(lines)


def _shown(key: str, value) -> str:
    if key == "fused":
        return "--fuse" if value else "--no-fuse"
    return repr(value)


def start_state(out_dir: Path, meta: dict, *, resume: bool, items: Sequence[InputItem] | None = None) -> None:
    """Create OUT/.mrseg; on a fresh start clear an earlier run's journal, on resume check it is the same run.

    `meta` holds what the ids and outputs depend on (sources, vid_stride, formats, precision, fused); a resume
    with others is refused. `items`, the run's inputs in id order, are listed in OUT/.mrseg/inputs.jsonl and
    fingerprinted in run.json (`inputs`): ids are positions in the sorted listing, so a resume whose inputs
    differ (a file added, removed or renamed, another stdin or .txt list) would predict some inputs twice and
    others never; it is refused, saying what changed.
    """
    state = out_dir / STATE_DIR
    run_json = state / "run.json"
    listing = None if items is None else [[it.id, str(it.path), it.frame] for it in items]
    if listing is not None:
        meta = {**meta, "inputs": inputs_fingerprint(listing)}
    if resume and not run_json.exists() and not _journaled_anything(out_dir):
        # killed between taking the lock (which creates OUT/.mrseg) and writing run.json: nothing to resume
        print(f"note: {out_dir} holds no run to resume (it was stopped before its first input): starting it",
              file=sys.stderr)  # fmt: skip
        resume = False
    if resume:
        try:
            old = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(
                f"--resume: {run_json} is missing or unreadable ({e}); start a new run"
            ) from e
        checked = [("sources", "SOURCE arguments"), ("vid_stride", "--vid-stride"), ("formats", "--format")]
        # these change the detections; runs recorded before they were kept lack them
        arithmetic = (("precision", "--precision"), ("fused", "--fuse/--no-fuse"))
        checked += [(key, what) for key, what in arithmetic if key in old]
        for key, what in checked:
            if old.get(key) != meta.get(key):
                raise RunFolderError(
                    f"--resume: the {what} differ from the run in {out_dir} "
                    f"(was {_shown(key, old.get(key))}, now {_shown(key, meta.get(key))}); "
                    "resume with the same ones or start a new run"
                )
        if listing is not None:
            _check_same_inputs(out_dir, old, meta["inputs"], listing)
        if old.get("world_size", 1) != meta.get("world_size", 1):
            # Inputs go to other ranks now: the journals so far become an older generation (see journal).
            archive_generation(out_dir)
            write_json_atomic(run_json, {**old, "world_size": meta.get("world_size", 1)})
        remove_stale_temps(out_dir)
        return
    remove_stale_temps(out_dir)
    if state.exists():
        removed, listed = remove_owned(out_dir, state)
        if not listed and any((out_dir / f).exists() for f in item_folders()):
            print(
                f"note: {out_dir} holds {', '.join(f + '/' for f in item_folders())} files of a run that did "
                "not list them (an older mrseg): they are left as they are, mixed with this run's; remove "
                "them yourself if they are not wanted",
                file=sys.stderr,
            )
        _clear_state(state)
    for name in FINAL_FILES:  # an earlier run's; left there, an interrupted new run would look finished
        (out_dir / name).unlink(missing_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    if items is not None:
        write_owned(state, owned_paths(out_dir, items, meta.get("formats", ())))
    if listing is not None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in listing)
        atomic_write_text(state / INPUTS_FILE, text, fsync=True)
    write_json_atomic(run_json, meta)


# A temporary sibling of an output file (`outputs.atomic.temp_sibling`: `.<name>.<pid>.<8 hex>.tmp[.mp4]`, the
# YOLO image link's `.<name>.<pid>.tmp`) that a killed run left behind.
_STALE_TEMP = re.compile(r"\..+\.\d+(\.[0-9a-f]{8})?\.tmp(\.mp4)?")


def remove_stale_temps(out_dir: Path) -> int:
    """Remove the temporary files a killed run left in OUT and its output folders (the run lock is held, so
    no other run is writing them); returns how many. Each is a copy of a file being written when the run
    died, never a file a finished input or the final files depend on."""
    out_dir = Path(out_dir)
    found = [p for p in out_dir.glob(".*") if p.is_file()]
    for folder in item_folders():
        if (out_dir / folder).is_dir():
            found += [p for p in (out_dir / folder).rglob(".*") if p.is_file() or p.is_symlink()]
    stale = [p for p in found if _STALE_TEMP.fullmatch(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _journaled_anything(out_dir: Path) -> bool:
    state = out_dir / STATE_DIR
    return any(p.stat().st_size for p in state.glob("*.jsonl") if p.name != INPUTS_FILE)


def _clear_state(state: Path) -> None:
    """Remove an earlier run's state (journals, segments, lists) but the lock, which this run holds."""
    for child in state.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def check_same_lock(out_dir: Path, token: dict | None) -> str | None:
    """None when this rank sees the lock file rank 0 took (`token`), else why the run can't go on."""
    if token is None or same_lock(out_dir, token):
        return None
    return (
        f"{lock_path(out_dir)} as this node sees it is not the lock rank 0 took ({token}): "
        f"--out {out_dir} is not on a filesystem shared by every node of the run. A multi-node run needs "
        "--out on a shared filesystem (NFS, Lustre, ...); or run one job per node, each with its own "
        "inputs and --out"
    )


def _check_same_inputs(out_dir: Path, old_meta: dict, fingerprint: dict, listing: list[list]) -> None:
    old = old_meta.get("inputs")
    if old is None:  # a run started before inputs were fingerprinted: only the count can be checked
        if old_meta.get("num_items", len(listing)) == len(listing):
            return
    elif old == fingerprint:
        return
    changed = _inputs_changed(out_dir, listing)
    raise RunFolderError(
        f"--resume: the inputs differ from the run in {out_dir} ({changed}). Inputs are numbered by their "
        "position in the sorted listing, so resuming would predict some of them twice and others never. "
        "Restore the inputs as they were to resume, or start a new run (--exist-ok, or another --out)."
    )
