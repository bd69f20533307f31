"""What `mrseg train` tells the user: a progress bar (loss, s/iteration, ETA) on a terminal, plain lines
otherwise; and the CPU threads and data-loading workers a run uses when not told."""

from __future__ import annotations

import os
from collections import deque


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


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainReporter:
    """Progress bar on a terminal (iteration, loss and s/iteration over the last `window` steps, ETA from
    that pace), plain log lines otherwise; silent on ranks > 0 or when quiet. The pace counts the training
    steps only: evaluation and checkpoint pauses are left out of s/iteration and of the ETA."""

    def __init__(self, enabled: bool, total: int, start: int, window: int = 20):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.enabled = enabled
        self.total = total
        self.console = Console(stderr=True)
        self.bar = None
        self._seconds: deque[float] = deque(maxlen=window)
        self._losses: deque[float] = deque(maxlen=window)
        if enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, markup=False)

    @property
    def sec_per_iter(self) -> float | None:
        return sum(self._seconds) / len(self._seconds) if self._seconds else None

    def eta(self, iteration: int) -> str:
        pace = self.sec_per_iter
        return "-" if pace is None else format_duration(pace * (self.total - iteration))

    def step(self, iteration: int, loss: float, seconds: float) -> None:
        """After each step: its loss and duration (seconds)."""
        self._seconds.append(seconds)
        self._losses.append(loss)
        if self.bar is not None:
            info = (
                f"loss {sum(self._losses) / len(self._losses):.3f}  {self.sec_per_iter:.3f} s/it  "
                f"ETA {self.eta(iteration)}"
            )
            self.bar.update(self.task, completed=iteration, info=info)

    def log_line(self, line: str) -> None:
        if self.bar is None:
            self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
