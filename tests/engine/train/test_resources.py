"""Threads and workers `mrseg train` picks when not told."""

from __future__ import annotations

import pytest

from mrseg.engine.train import resources
from mrseg.engine.train.resources import pick_threads, pick_workers


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cores: int, load: float) -> None:
        os = resources.os
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
