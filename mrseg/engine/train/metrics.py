"""metrics.jsonl: one JSON object per logged training step ("type": "train") and per evaluation ("eval")."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from mrseg.outputs.atomic import atomic_write_text


class MetricsLog:
    """Appends lines to OUT/metrics.jsonl (flushed per line). On resume, lines past the resumed iteration are
    cut so the file reads as one uninterrupted run."""

    def __init__(self, path: str | os.PathLike, resume_iter: int | None = None):
        self.path = Path(path)
        if resume_iter is not None and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if (i := _iteration(line)) is not None and i <= resume_iter]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))  # a kill here loses nothing
        elif resume_iter is None:
            self.path.write_text("", encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _iteration(line: str) -> int | None:
    try:
        return int(json.loads(line)["iter"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl (a torn last line is ignored)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on `device`, or this process's resident memory on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0
