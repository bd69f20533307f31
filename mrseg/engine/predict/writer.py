"""A background thread that consumes finished inputs, so the model never waits on encoding or disk.

The queue is bounded: when writing falls behind, `put` blocks, which keeps memory flat. An exception of the
handler (which decides what is fatal, see `OutputSink`) is re-raised in the caller at the next `put` or at
`close` (wrapped in a RuntimeError; SystemExit and KeyboardInterrupt as they are).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_STOP = object()


class WriterThread:
    def __init__(self, handle: Callable[[object], None], maxsize: int = 8, name: str = "mrseg-writer"):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is not None:
                continue  # drain without work so a blocked put() can return and see the error
            try:
                self._handle(job)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e

    def put(self, job: object) -> None:
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(job, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Finish every queued job, stop the thread, re-raise its error if any."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if not isinstance(self._error, Exception):  # SystemExit, KeyboardInterrupt: passed on as they are
            raise self._error
        raise RuntimeError(f"writing the outputs failed: {self._error}") from self._error
