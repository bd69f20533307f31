"""Where a predict run writes: `runs/predict`, `runs/predict2`, ... and what a resume may continue."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from mrseg.engine.journal import STATE_DIR, write_json_atomic

DEFAULT_OUT = Path("runs") / "predict"
FINAL_FILES = ("annotations.json", "results.json", "predictions.jsonl", "failures.jsonl")


class RunFolderError(ValueError):
    """The output folder can't be used as asked (names the folder and what to do)."""


def _numbered(base: Path) -> list[Path]:
    pattern = re.compile(re.escape(base.name) + r"(\d*)$")
    found = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1) or 1), p))
    return [p for _, p in sorted(found)]


def resolve_out_dir(out: str | Path | None, *, exist_ok: bool, resume: bool) -> Path:
    """The folder this run writes to.

    No `out`: `runs/predict`, or the next free `runs/predictN` (with `resume`: the latest existing one).
    An explicit `out` is used as given; if it already holds a run, `resume` or `exist_ok` must say what to do.
    """
    if out is None:
        runs = _numbered(DEFAULT_OUT)
        if resume:
            if not runs:
                raise RunFolderError(
                    f"--resume: no earlier run in {DEFAULT_OUT.parent}/; pass --out DIR of the run"
                )
            return runs[-1]
        if exist_ok or not DEFAULT_OUT.exists():
            return DEFAULT_OUT
        n = 2
        while DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}{n}").exists():
            n += 1
        return DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}{n}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: exists and is not a folder; choose another --out")
    has_run = (out / STATE_DIR).is_dir()
    if resume and not has_run:
        raise RunFolderError(f"--resume: {out} holds no earlier run (no {STATE_DIR}/ in it); drop --resume")
    if has_run and not (resume or exist_ok):
        raise RunFolderError(
            f"--out {out} already holds a predict run; pass --resume to continue it, "
            "--exist-ok to start over in it, or choose another --out"
        )
    return out


def start_state(out_dir: Path, meta: dict, *, resume: bool) -> None:
    """Create OUT/.mrseg; on a fresh start clear an earlier run's journal, on resume check it is the same run.

    `meta` holds what the ids and outputs depend on (sources, vid_stride, formats).
    """
    state = out_dir / STATE_DIR
    run_json = state / "run.json"
    if resume:
        try:
            old = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(
                f"--resume: {run_json} is missing or unreadable ({e}); start a new run"
            ) from e
        for key, what in (
            ("sources", "SOURCE arguments"),
            ("vid_stride", "--vid-stride"),
            ("formats", "--format"),
        ):
            if old.get(key) != meta.get(key):
                raise RunFolderError(
                    f"--resume: the {what} differ from the run in {out_dir} "
                    f"(was {old.get(key)!r}, now {meta.get(key)!r}); "
                    "resume with the same ones or start a new run"
                )
        return
    if state.exists():
        shutil.rmtree(state)
    for name in FINAL_FILES:  # an earlier run's; left there, an interrupted new run would look finished
        (out_dir / name).unlink(missing_ok=True)
    state.mkdir(parents=True)
    write_json_atomic(run_json, meta)
