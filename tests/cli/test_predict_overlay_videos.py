"""Overlay videos are committed video by video (issue 13.5): `overlay/a.mp4` is in place as soon as the last
frame of a.mp4 is written, so a run killed (SIGKILL) in the next video keeps it, and `--resume` neither
predicts a.mp4's frames again nor rebuilds its overlay. Two tiny generated videos, the tiny seeded model of
tests/engine/conftest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from mrseg.cli import main
from tests.engine.conftest import write_moving_box_video

SIZES = {"a": (64, 48), "b": (80, 60)}  # (width, height): the frame size tells the videos apart
FRAMES = {"a": 4, "b": 3}

# `mrseg predict` that kills itself (SIGKILL, no cleanup) at the first model call on a frame of b.mp4, after
# waiting a little for a.mp4's overlay (which, committed per video, is there by then).
_KILL_IN_SECOND_VIDEO = """
import os, signal, sys, time
from pathlib import Path
from mrseg.engine.predictor import Predictor
forward = Predictor._forward
overlay = Path(sys.argv[-1]) / "overlay" / "a.mp4"
def forward_or_die(self, inputs):
    if any(tuple(x.shape[-2:]) == (60, 80) for x in inputs):
        deadline = time.monotonic() + 10
        while not overlay.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, inputs)
Predictor._forward = forward_or_die
from mrseg.cli import main
main(sys.argv[1:], prog_name="mrseg")
"""

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _video(path: Path, size: tuple[int, int], frames: int) -> Path:
    return write_moving_box_video(path, frames=frames, size=size, box=(4, 10, 30, 40), step=5)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _coco(out: Path) -> dict:
    data = json.loads((out / "annotations.json").read_text())
    data.pop("info")
    return data


def test_a_kill_in_the_second_video_keeps_the_first_videos_overlay_and_resume_does_not_redo_it(
    tiny_weights, tmp_path
):
    videos = [str(_video(tmp_path / f"{v}.mp4", SIZES[v], FRAMES[v])) for v in ("a", "b")]
    args = [*videos, "--weights", str(tiny_weights), "--score", "0.2", "--workers", "0"]
    args += ["--format", "coco,overlay"]
    clean = CliRunner().invoke(main, ["predict", *args, "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0, clean.output

    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_IN_SECOND_VIDEO, "predict", *args, "--out", str(out)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    overlay_a = out / "overlay" / "a.mp4"
    assert overlay_a.exists(), "a.mp4's overlay was not committed when its last frame was written"
    assert _frame_count(overlay_a) == FRAMES["a"]
    assert not (out / "overlay" / "b.mp4").exists()
    before = (overlay_a.stat().st_mtime_ns, overlay_a.read_bytes())

    resumed = CliRunner().invoke(main, ["predict", *args, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"({FRAMES['a']} done earlier)" in resumed.stderr  # a's frames were not predicted again
    records = [json.loads(line) for line in (out / ".mrseg" / "records-0.jsonl").read_text().splitlines()]
    ids = [r["image"]["id"] for r in records]
    assert sorted(ids) == list(range(1, 1 + FRAMES["a"] + FRAMES["b"])) and len(set(ids)) == len(ids)
    assert (overlay_a.stat().st_mtime_ns, overlay_a.read_bytes()) == before  # nor its overlay rebuilt
    assert _frame_count(out / "overlay" / "b.mp4") == FRAMES["b"]
    assert _coco(out) == _coco(tmp_path / "clean")
