"""Kill anywhere (issue 13): SIGKILL `mrseg predict` and `mrseg train` at seeded random moments, continue
each time (`--resume`), and compare the final files with those of an uninterrupted run.

predict: one run of images plus a short video into every format (coco, coco-results, jsonl, labelme, yolo,
overlay). Each attempt is killed after a delay drawn uniformly in [0, 1.2 x the clean run's time]; an
attempt that finishes first is compared with the clean run, its folder removed, and the chain starts over.
Once enough kills have landed the chain is finished with a last `--resume` and compared. Files must be equal
byte for byte, except `annotations.json`'s `info` (its date), and overlay videos joined from several segments
(re-encoded: frame count and size must match, pixels within `--video-tol` mean absolute difference).
train: `--checkpoint-every 1`, killed at a random moment, continued with `--resume OUT/last.pt` (a fresh
start when no last.pt was written yet); the final weights must equal the uninterrupted run's exactly and
metrics.jsonl must hold each iteration once.

The runs go through a warm fork server (`WarmRunner`): one Python process imports mrseg once, then forks a
child per run that runs the CLI as `python -m mrseg` does (`mrseg.cli.main`), and SIGKILLs it after the drawn
delay. That keeps a run at its own cost (a cold `python -m mrseg` spends ~4 s importing torch); `--cold` runs
every attempt as a real `python -m mrseg` process instead (killed with its process group).
`--commit-seconds` sets how long the journal holds lines before syncing (`journal.COMMIT_SECONDS`, 2 s by
default; smaller values make kills land between commits more often).

    python benchmarks/kill_campaign.py --kills 100 --train-kills 30 --seed 1 --work /tmp/kills
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREDICT_FORMATS = "coco,coco-results,jsonl,labelme,yolo,overlay"

_SERVER = r"""
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
import cv2, pycocotools.mask
import mrseg.cli, mrseg.engine.predict.run, mrseg.engine.train.trainer, mrseg.outputs, mrseg.model.zoo
from mrseg.cli import main
from mrseg.engine.predict import journal

reply = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    req = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(req["cwd"])
            if req.get("commit_seconds") is not None:
                journal.COMMIT_SECONDS = float(req["commit_seconds"])
            main(req["argv"], prog_name="mrseg")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    killed = False
    deadline = None if req.get("kill_after") is None else start + float(req["kill_after"])
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            killed = True
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    reply.write(json.dumps({"code": code, "killed": killed, "seconds": time.monotonic() - start}) + "\n")
    reply.flush()
"""


@dataclass
class Outcome:
    code: int
    killed: bool
    seconds: float
    log: str = ""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


class WarmRunner:
    """Runs `mrseg ARGS` in a child forked from one warm process; SIGKILLs it `kill_after` s in, if given."""

    def __init__(self, logs: Path, commit_seconds: float | None = None):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.commit_seconds = commit_seconds
        self.count = 0
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=_env(), cwd=ROOT,
        )  # fmt: skip

    def __call__(self, argv: list[str], cwd: Path, kill_after: float | None = None) -> Outcome:
        self.count += 1
        log = self.logs / f"run-{self.count:03d}.log"
        log.write_text("")  # a child killed before it opens its log (a kill drawn that early) leaves it empty
        req = {"argv": [str(a) for a in argv], "cwd": str(cwd), "log": str(log), "kill_after": kill_after,
               "commit_seconds": self.commit_seconds}  # fmt: skip
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self._proc.wait()})")
        reply = json.loads(line)
        return Outcome(reply["code"], reply["killed"], reply["seconds"], log.read_text(errors="replace"))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)


class ColdRunner:
    """Runs `python -m mrseg ARGS` as a new process group; SIGKILLs the group after `kill_after` s if given.
    `commit_seconds` goes through a one-line wrapper that sets `journal.COMMIT_SECONDS` first."""

    def __init__(self, logs: Path, commit_seconds: float | None = None):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.commit_seconds = commit_seconds
        self.count = 0

    def __call__(self, argv: list[str], cwd: Path, kill_after: float | None = None) -> Outcome:
        self.count += 1
        log = self.logs / f"cold-{self.count:03d}.log"
        if self.commit_seconds is None:
            cmd = [sys.executable, "-m", "mrseg"]
        else:
            cmd = [sys.executable, "-c",
                   "import runpy, sys; import mrseg.engine.predict.journal as j; "
                   f"j.COMMIT_SECONDS = {self.commit_seconds!r}; sys.argv[0] = 'mrseg'; "
                   "runpy.run_module('mrseg', run_name='__main__')"]  # fmt: skip
        start = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen([*cmd, *map(str, argv)], cwd=cwd, env=_env(), stdout=f, stderr=f,
                                    start_new_session=True)  # fmt: skip
            killed = False
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
        return Outcome(proc.returncode, killed, time.monotonic() - start, log.read_text(errors="replace"))

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- comparing


def _files(folder: Path) -> dict[str, Path]:
    """Every file under `folder` but the run's state folder `.mrseg/`, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if (p.is_file() or p.is_symlink()) and ".mrseg" not in p.relative_to(folder).parts
    }


def _video_frames(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def compare_predict(got: Path, want: Path, video_tol: float = 8.0) -> tuple[list[str], dict]:
    """(differences between two predict folders, {"videos_reencoded", "video_mad": worst mean abs diff})."""
    import numpy as np

    problems: list[str] = []
    stats = {"videos_reencoded": 0, "video_mad": 0.0}
    a, b = _files(got), _files(want)
    for name in sorted(set(a) ^ set(b)):
        problems.append(f"{name}: only in {'the resumed run' if name in a else 'the clean run'}")
    for name in sorted(set(a) & set(b)):
        x, y = a[name].read_bytes(), b[name].read_bytes()
        if x == y:
            continue
        if name == "annotations.json":
            dx, dy = json.loads(x), json.loads(y)
            dx.pop("info", None)
            dy.pop("info", None)
            if dx != dy:
                problems.append(f"{name}: differs beyond its info block")
        elif name.endswith(".mp4"):
            fx, fy = _video_frames(a[name]), _video_frames(b[name])
            if len(fx) != len(fy) or any(u.shape != v.shape for u, v in zip(fx, fy, strict=True)):
                problems.append(f"{name}: {len(fx)} frames, the clean run's has {len(fy)} (or another size)")
                continue
            diffs = [float(np.abs(u.astype(int) - v.astype(int)).mean()) for u, v in zip(fx, fy, strict=True)]
            mad = max(diffs, default=0.0)
            stats["videos_reencoded"] += 1
            stats["video_mad"] = max(stats["video_mad"], mad)
            if mad > video_tol:
                problems.append(f"{name}: frames differ by {mad:.2f} mean abs (re-encoded from segments)")
        else:
            problems.append(f"{name}: differs byte for byte")
    return problems, stats


# ------------------------------------------------------------------------------------------------ predict


def make_predict_inputs(
    folder: Path, nuts_images: list[Path], n_images: int = 5, frames: int = 6
) -> list[str]:
    """`n_images` real photos shrunk to 96x72 in `folder/images` and an mp4 of `frames` frames (none when 0),
    the last photo sliding across it: the SOURCEs."""
    import cv2
    import numpy as np

    sources = []
    if n_images:
        images = folder / "images"
        images.mkdir(parents=True, exist_ok=True)
        for p in nuts_images[:n_images]:
            cv2.imwrite(str(images / p.name), cv2.resize(cv2.imread(str(p)), (96, 72)))
        sources.append(str(images))
    if not frames:
        return sources
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (80, 60))
    photo = cv2.resize(cv2.imread(str(nuts_images[-1])), (80, 60))
    for t in range(frames):
        img = np.roll(photo, 4 * t, axis=1)
        cv2.rectangle(img, (4 + 5 * t, 10), (30 + 5 * t, 40), (60, 180, 240), -1)
        writer.write(img)
    writer.release()
    return [*sources, str(video)]


@dataclass
class Campaign:
    kills: int = 0  # attempts that a SIGKILL ended
    finished_early: int = 0  # attempts that ended before their kill
    completed_chains: int = 0  # chains taken to the end and compared
    attempts: int = 0
    files_compared: int = 0
    kill_times: list[float] = field(default_factory=list)
    journal_lines_at_kill: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    clean_seconds: float = 0.0


def _journal_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / ".mrseg").glob("records-*.jsonl"))


def predict_campaign(run, work: Path, sources: list[str], weights: Path, kills: int, seed: int,
                     formats: str = PREDICT_FORMATS, last=None) -> Campaign:  # fmt: skip
    """Kill `mrseg predict` `kills` times (seeded delays), resume each time; compare every finished chain.
    `last` (default `run`) runs the final `--resume`."""
    common = ["predict", *sources, "--weights", str(weights), "--score", "0.2", "--format", formats,
              "--workers", "0", "--quiet"]  # fmt: skip
    clean = work / "clean"
    res = run([*common, "--out", clean], work)
    if res.code != 0:
        raise RuntimeError(f"the clean run failed (exit {res.code}):\n{res.log[-3000:]}")
    camp = Campaign(clean_seconds=res.seconds)
    rng = random.Random(seed)
    out = work / "killed"

    def finish(outcome: Outcome, how: str) -> None:
        if outcome.code != 0:
            camp.problems.append(f"{how}: exit {outcome.code}:\n{outcome.log[-2000:]}")
        else:
            problems, stats = compare_predict(out, clean)
            camp.files_compared += len(_files(clean))
            camp.problems += [f"{how}: {p}" for p in problems]
            for k, v in stats.items():
                camp.stats[k] = max(camp.stats.get(k, 0), v)
        camp.completed_chains += 1
        shutil.rmtree(out)

    while camp.kills < kills:
        delay = rng.uniform(0.0, 1.2 * res.seconds)
        resume = ["--resume"] if (out / ".mrseg").is_dir() else []
        outcome = run([*common, "--out", out, *resume], work, kill_after=delay)
        camp.attempts += 1
        if outcome.killed:
            camp.kills += 1
            camp.kill_times.append(delay)
            camp.journal_lines_at_kill.append(_journal_lines(out) if out.exists() else 0)
        else:
            camp.finished_early += 1
            finish(outcome, f"attempt {camp.attempts} (finished before its kill at {delay:.2f} s)")
    if out.exists():
        resume = ["--resume"] if (out / ".mrseg").is_dir() else []
        finish((last or run)([*common, "--out", out, *resume], work), "the last --resume")
    return camp


# -------------------------------------------------------------------------------------------------- train


def make_shapes(folder: Path, n: int = 6, size: int = 64) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "shapes_generate", ROOT / "examples" / "shapes" / "generate.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate_split(str(folder), "train", n, size, seed=2, max_shapes=2, min_shape=20, max_shape=30)
    return folder


def train_args(shapes: Path, out: Path, iters: int) -> list[str]:
    return [
        "train", "--coco", shapes / "train.json", "--images", shapes / "train", "--arch", "r18-fpn",
        "--weights", "none", "--iters", iters, "--batch", "2", "--lr", "0.01", "--min-size", "64",
        "--max-size", "64", "--workers", "0", "--roi-batch", "16", "--rpn-proposals", "50",
        "--log-every", "1", "--checkpoint-every", "1", "--device", "cpu", "--quiet", "--out", out,
    ]  # fmt: skip


def compare_train(got: Path, want: Path, iters: int) -> list[str]:
    import torch

    problems = []
    a = torch.load(got / "last.pt", weights_only=True)
    b = torch.load(want / "last.pt", weights_only=True)
    if a["iteration"] != b["iteration"]:
        problems.append(f"last.pt: iteration {a['iteration']}, the clean run's {b['iteration']}")
    for key, value in b["model"].items():
        if not torch.equal(a["model"][key], value):
            problems.append(f"last.pt: {key} differs from the uninterrupted run's")
    names, clean_names = sorted(p.name for p in got.iterdir()), sorted(p.name for p in want.iterdir())
    if names != clean_names:
        problems.append(f"the run folder holds {names}, the uninterrupted run's {clean_names}")
    lines = (got / "metrics.jsonl").read_text().splitlines()
    its = [json.loads(x)["iter"] for x in lines if json.loads(x).get("type") == "train"]
    if its != list(range(1, iters + 1)):
        problems.append(f"metrics.jsonl: train iterations {its}, not 1..{iters} once each")
    return problems


def train_campaign(run, work: Path, shapes: Path, kills: int, seed: int, iters: int = 6) -> Campaign:
    clean = work / "train-clean"
    res = run(train_args(shapes, clean, iters), work)
    if res.code != 0:
        raise RuntimeError(f"the clean training failed (exit {res.code}):\n{res.log[-3000:]}")
    camp = Campaign(clean_seconds=res.seconds)
    rng = random.Random(seed)
    out = work / "train-killed"

    def attempt(kill_after: float | None) -> Outcome:
        if (out / "last.pt").exists():
            return run(["train", "--resume", out / "last.pt", "--quiet"], work, kill_after=kill_after)
        return run([*train_args(shapes, out, iters), "--exist-ok"], work, kill_after=kill_after)

    def finish(outcome: Outcome, how: str) -> None:
        if outcome.code != 0:
            camp.problems.append(f"{how}: exit {outcome.code}:\n{outcome.log[-2000:]}")
        else:
            camp.problems += [f"{how}: {p}" for p in compare_train(out, clean, iters)]
        camp.completed_chains += 1
        shutil.rmtree(out)

    while camp.kills < kills:
        delay = rng.uniform(0.0, 1.2 * res.seconds)
        outcome = attempt(delay)
        camp.attempts += 1
        if outcome.killed:
            camp.kills += 1
            camp.kill_times.append(delay)
        else:
            camp.finished_early += 1
            finish(outcome, f"attempt {camp.attempts} (finished before its kill at {delay:.2f} s)")
    if out.exists():
        finish(attempt(None), "the last --resume")
    return camp


def _report(name: str, camp: Campaign) -> str:
    lines = [
        f"{name}: {camp.kills} kills landed in {camp.attempts} attempts ({camp.finished_early} finished "
        f"first), {camp.completed_chains} chains completed and compared ({camp.files_compared} files); "
        f"clean run {camp.clean_seconds:.2f} s",
    ]
    if camp.journal_lines_at_kill:
        at = camp.journal_lines_at_kill
        lines.append(f"  journal lines on disk at the kills: min {min(at)}, max {max(at)}, "
                     f"{sum(1 for x in at if x == 0)} kills before the first line")  # fmt: skip
    if camp.stats:
        lines.append(f"  {camp.stats}")
    lines.append(f"  problems: {len(camp.problems)}")
    lines += [f"  - {p}" for p in camp.problems[:20]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs of mrseg predict")
    ap.add_argument("--train-kills", type=int, default=30, help="SIGKILLs of mrseg train")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mrseg-kill-campaign"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--commit-seconds", type=float, default=None)
    ap.add_argument("--cold", action="store_true", help="every attempt a real `python -m mrseg` process")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from conftest import NUTS, save_tiny_checkpoint

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    weights = save_tiny_checkpoint(work / "tiny.pt")
    sources = make_predict_inputs(work / "inputs", sorted((NUTS / "images").glob("*.jpg")), args.images,
                                  args.frames)  # fmt: skip
    runner = (ColdRunner if args.cold else WarmRunner)(work / "logs", args.commit_seconds)
    start = time.monotonic()
    try:
        failed = 0
        if args.kills:
            camp = predict_campaign(runner, work, sources, weights, args.kills, args.seed)
            print(
                _report(
                    f"predict ({args.images} images + a {args.frames}-frame video, {PREDICT_FORMATS})", camp
                )
            )
            failed += len(camp.problems)
        if args.train_kills:
            shapes = make_shapes(work / "shapes")
            camp = train_campaign(runner, work, shapes, args.train_kills, args.seed, args.iters)
            print(_report(f"train ({args.iters} iterations, --checkpoint-every 1)", camp))
            failed += len(camp.problems)
    finally:
        runner.close()
    print(f"{time.monotonic() - start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
