"""Threads and workers `mrseg train` picks when not told, and the progress reporter's pace and ETA."""

from __future__ import annotations

import pytest

from mrseg.engine.train import progress as train_progress
from mrseg.engine.train.progress import TrainReporter, format_duration, pick_threads, pick_workers


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cores: int, load: float) -> None:
        os = train_progress.os
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)

    return set_machine


@pytest.mark.parametrize(
    "cores, load, processes, expected",
    [(2, 0.1, 1, 2), (2, 0.9, 1, 1), (2, 6.0, 1, 1), (16, 3.2, 1, 13), (16, 0.0, 4, 4), (16, 14.0, 4, 1)],
)
def test_threads_are_the_free_cores_shared_by_the_processes(machine, cores, load, processes, expected):
    machine(cores, load)
    threads, why = pick_threads(None, processes)
    assert threads == expected
    assert f"{cores} cores" in why


def test_threads_asked_for_are_kept_and_bad_ones_refused(machine):
    machine(2, 0.0)
    assert pick_threads(3) == (3, "--threads")
    with pytest.raises(ValueError, match="--threads 0"):
        pick_threads(0)


def test_workers(machine):
    machine(16, 0.0)
    assert pick_workers(None, "cpu") == 1
    assert pick_workers(None, "cuda") == 8
    assert pick_workers(None, "cuda", processes=4) == 3
    assert pick_workers(0, "cuda") == 0


def test_reporter_pace_and_eta_leave_out_nothing_but_the_window():
    reporter = TrainReporter(False, total=100, start=0, window=4)
    assert reporter.eta(0) == "-"
    for i, seconds in enumerate([9.0, 1.0, 1.0, 1.0, 1.0], start=1):
        reporter.step(i, loss=1.0, seconds=seconds)
    assert reporter.sec_per_iter == pytest.approx(1.0)  # the 9 s step has left the window
    assert reporter.eta(40) == format_duration(60) == "1:00"
    assert format_duration(3725) == "1:02:05"
