"""What a long job (predict, train, eval --images) tells the user on stderr: a rich progress bar on a
terminal, plain lines otherwise; plus the windowed pace and ETA that training shows."""

from __future__ import annotations

import re
import sys
import threading
from collections import deque

import rich.progress as rp
from rich.console import Console

_COLUMNS = {"bar": rp.BarColumn, "count": rp.MofNCompleteColumn, "percent": rp.TaskProgressColumn}
_COLUMNS["eta"] = rp.TimeRemainingColumn


class ProgressBar:
    """A bar of `total` items after the text `label`, drawn when `show` and stderr is a terminal.

    columns: "bar", "count" (done/total), "percent", "eta" (rich's, from its recent speed), or a text whose
    {fields} `advance` and `update` set (their first values: `fields`); {rate} is the bar's own items/s ("-"
    until known). Thread-safe. `say` puts a message above the bar, or on stderr as a plain line without one;
    `quiet`: no bar and no messages. The bar is up between start and close (or in a `with`); `transient`
    clears it at the end.
    """

    def __init__(self, label: str, total: int, *columns: str, show: bool = True, quiet: bool = False,
                 completed: int = 0, transient: bool = False, **fields):  # fmt: skip
        self.total, self.completed, self.quiet = total, completed, quiet
        self._lock = threading.RLock()
        console = Console(stderr=True)
        self._bar = None
        if show and not quiet and console.is_terminal:
            parts = [_COLUMNS[c]() if c in _COLUMNS else rp.TextColumn(_fields(c)) for c in columns]
            self._bar = rp.Progress(rp.TextColumn(label), *parts, console=console, transient=transient)
            self._task = self._bar.add_task(label, total=total, completed=completed, rate="-", **fields)

    @property
    def live(self) -> bool:
        """Whether a bar is drawn (else the caller's messages are all the user sees)."""
        return self._bar is not None

    def start(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self, n: int = 1, **fields) -> None:
        """`n` more items done; `fields`: new values of the text columns' {fields}."""
        with self._lock:
            self.update(self.completed + n, **fields)

    def update(self, completed: int, **fields) -> None:
        """`completed` items done in all; `fields` as in `advance`."""
        with self._lock:
            self.completed = completed
            if self._bar is not None:
                self._bar.update(self._task, completed=completed, **fields)
                speed = self._bar.tasks[0].speed
                self._bar.update(self._task, rate=f"{speed:.1f}" if speed else "-")

    def say(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        elif not self.quiet:
            print(message, file=sys.stderr, flush=True)


def _fields(text: str) -> str:
    """Rich's form of a column text: "{loss} s" -> "{task.fields[loss]} s"."""
    return re.sub(r"\{(\w+)\}", r"{task.fields[\1]}", text)


class Window:
    """The mean of the last `size` values added (None before any): training's loss and s/iteration over
    its recent steps, so that the ETA follows the current pace rather than the whole run's."""

    def __init__(self, size: int = 20):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    @property
    def mean(self) -> float | None:
        return sum(self._values) / len(self._values) if self._values else None


def eta(seconds_each: float | None, left: int) -> str:
    """The time `left` more items take at `seconds_each`, as h:mm:ss or m:ss; "-" without a pace."""
    if seconds_each is None:
        return "-"
    h, rest = divmod(max(0, round(seconds_each * left)), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
