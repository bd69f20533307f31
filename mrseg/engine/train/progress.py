"""What `mrseg train` tells the user: a progress bar with ETA on a terminal, plain lines otherwise."""

from __future__ import annotations


class TrainReporter:
    """Progress bar with ETA on a terminal, plain log lines otherwise; silent on ranks > 0 or when quiet."""

    def __init__(self, enabled: bool, total: int, start: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = enabled
        self.console = Console(stderr=True)
        self.bar = None
        if enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, markup=False)

    def advance(self, iteration: int, info: str | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=iteration, **({"info": info} if info is not None else {}))

    def log_line(self, line: str) -> None:
        if self.bar is None:
            self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
