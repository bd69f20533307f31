"""`predictions.jsonl`: one JSON object per input, appended and flushed as each input finishes."""

from __future__ import annotations

import os
from typing import TextIO

import numpy as np

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.records import public_instances, record_line

JSONL_NAME = "predictions.jsonl"


class JsonlWriter:
    """Writes `{"image": {...}, "instances": [...]}` lines (exact RLE, no `polygons`) to `out`: a path
    (opened for writing, or appending with `append=True` on `--resume`) or an open text stream (e.g.
    `sys.stdout`: flushed after every line, never closed here). `finalize` rewrites the file sorted by id."""

    def __init__(self, out: str | os.PathLike | TextIO, append: bool = False):
        if hasattr(out, "write"):
            self._f, self._owned = out, False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            self._f, self._owned = open(out, "a" if append else "w", encoding="utf-8"), True

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        self._f.write(record_line(item, det, public_instances(instances)))
        self._f.flush()

    def close(self) -> None:
        if self._owned and not self._f.closed:
            self._f.close()
