"""The progress bar on stderr (images/s, ETA, failures so far); silent when disabled or not a terminal."""

from __future__ import annotations

import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunProgress:
    """Thread-safe: the writer thread advances it. `print` goes above the bar, or to stderr without one."""

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.done = 0
        self.failed = 0
        self._lock = threading.Lock()
        console = Console(stderr=True)
        self._bar = None
        if enabled and console.is_terminal:
            self._bar = Progress(
                TextColumn("predict"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[failed]} failed"),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task("predict", total=total, rate="-", failed=0)

    def __enter__(self) -> RunProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, failed: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)
            if self._bar is not None:
                self._bar.advance(self._task)
                speed = self._bar.tasks[0].speed
                self._bar.update(self._task, rate=f"{speed:.1f}" if speed else "-", failed=self.failed)

    def print(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)
