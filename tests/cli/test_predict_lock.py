"""One live run per output folder (issue 13, point 7): `OUT/.mrseg/lock`.

Another process holds the lock (as a live `mrseg predict` does for its whole run): a second run into the same
folder, with `--exist-ok` or `--resume`, is refused naming the holder's pid, and leaves the live run's journal
alone. Once the holder is killed with SIGKILL the lock is stale: the next run takes it over with a note and
finishes. The runs go through the CLI's entry point in this process (click's runner); the holder is a plain
Python process (no torch import).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from mrseg.cli import main
from mrseg.engine.predict import run_lock
from mrseg.engine.predict.run_lock import RunLock, RunLockError

COMMON = ["--score", "0.2", "--format", "coco", "--workers", "0", "--device", "cpu"]
HOLD = (
    "import sys, time\n"
    "from mrseg.engine.predict.run_lock import RunLock\n"
    "RunLock.acquire(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)], catch_exceptions=False)


def _holder(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_while_one_holds_the_folder_and_a_killed_ones_lock_is_taken_over(
    tmp_path, nuts_images, tiny_weights
):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, src in enumerate(nuts_images[:2]):
        cv2.imwrite(str(images / f"{i}.jpg"), cv2.resize(cv2.imread(str(src)), (120, 90)))
    out = tmp_path / "out"
    first = _predict(images, "--weights", tiny_weights, "--out", out, *COMMON)
    assert first.exit_code == 0, first.output
    journal = out / ".mrseg" / "records-0.jsonl"
    before = journal.read_bytes()

    holder = _holder(out)  # stands for a live run of this folder
    try:
        for flag in ("--exist-ok", "--resume"):
            res = _predict(images, "--weights", tiny_weights, "--out", out, flag, *COMMON)
            assert res.exit_code == 1, res.output
            assert f"pid {holder.pid} on host {socket.gethostname()}" in res.output
            assert "in use by another mrseg predict run" in res.output and "another --out" in res.output
            assert journal.read_bytes() == before  # the live run's journal is untouched
        res = _predict(images, "--weights", tiny_weights, "--out", out, *COMMON)  # no flag: still its pid
        assert res.exit_code == 1 and f"pid {holder.pid}" in res.output, res.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    assert json.loads((out / ".mrseg" / "lock").read_text())["pid"] == holder.pid  # left behind by kill -9
    res = _predict(images, "--weights", tiny_weights, "--out", out, "--resume", *COMMON)
    assert res.exit_code == 0, res.output
    assert f"left by a run that no longer runs (pid {holder.pid}" in res.output
    assert not (out / ".mrseg" / "lock").exists()  # released at the end of the run
    assert (out / "annotations.json").exists()


def test_without_locks_a_dead_pid_of_this_host_is_stale_a_live_or_foreign_one_not(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "_try_lock", lambda fd: None)  # a filesystem without locks
    path = run_lock.lock_path(tmp_path)
    path.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for owner, refused in (
            ({"pid": live.pid, "host": socket.gethostname()}, True),
            ({"pid": dead.pid, "host": socket.gethostname()}, False),
            ({"pid": dead.pid, "host": "another-host"}, True),  # can't be checked from here
        ):
            path.write_text(json.dumps(owner))
            if refused:
                with pytest.raises(RunLockError, match=f"pid {owner['pid']} on host {owner['host']}"):
                    RunLock.acquire(tmp_path)
            else:
                lock = RunLock.acquire(tmp_path)
                assert f"pid {dead.pid}" in lock.note
                assert json.loads(path.read_text())["pid"] == os.getpid()
                lock.release()
                assert not path.exists()
    finally:
        live.kill()
        live.wait()
