"""The CPU threads and data-loading workers `mrseg train` uses when not told."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def pick_threads(requested: int | None, processes: int = 1) -> tuple[int, str]:
    """(torch threads per process, the reason in words). requested: --threads, or None for the cores that
    are not busy: the usable cores minus the 1-minute load average (other programs' runnable threads),
    shared among `processes` on this machine, at least 1. Threads beyond the free cores do not just idle:
    torch's OpenMP threads spin at every barrier waiting for a thread that is descheduled, and a step on a
    busy 2-core machine was measured 7x to 16x slower with 2 threads than with 1."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads {requested}: give 1 or more")
        return requested, "--threads"
    cores = usable_cores()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(1, min(cores, round(cores - busy)))
    why = f"{cores} cores" + (f", load average {busy:.1f}" if busy >= 0.5 else "")
    return max(1, free // max(1, processes)), why


def pick_workers(requested: int | None, device_type: str, processes: int = 1) -> int:
    """Data-loading processes: requested, else 1 on the CPU (decoding a batch is ~1% of a CPU training
    step; one process keeps it off the main thread without taking a core from the model), and up to 8 per
    process on an accelerator, where the loader must keep up with the device."""
    if requested is not None:
        return requested
    if device_type == "cpu":
        return 1
    return max(1, min(8, usable_cores() // max(1, processes) - 1))
