"""The writer fan-out of a predict run: each input's instance records go to every per-item writer of the
run's formats, then its journal line is written (the commit point for `--resume`)."""

from __future__ import annotations

import contextlib
import errno
import sys

from mrseg.engine.predict import journal
from mrseg.outputs.detections import InputItem
from mrseg.outputs.formats import WriterOptions, item_writers
from mrseg.outputs.jsonl import JsonlWriter
from mrseg.outputs.records import instance_records, record_line


class OutputSink:
    """Runs in the writer thread: records, per-item files, then the journal line (or a line on stdout).

    Jobs: ("ok", item, image or None, det), ("fail", item, reason, None), and ("end", last item of a video,
    None, None) once a video has no more frames in this run (its overlay is committed then). An error writing
    one input's files makes that input a failure record (its files written so far removed), so the other
    inputs and a later `--resume` go on; only errors that every input would hit (disk full, read-only, a
    closed stdout) and journal errors end the run.
    """

    def __init__(
        self, *, out_dir, rank, formats, classes, mask_format, simplify, vid_stride, stream, progress, quiet
    ):
        # Instance records always carry the exact RLE; polygons only when annotations.json is to hold them.
        coco_polygons = mask_format == "polygon" and "coco" in formats and not stream
        self.mask_format = "polygon" if coco_polygons else "rle"
        self.classes = classes
        self.simplify = simplify
        self.progress = progress
        self.quiet = quiet
        if stream:
            self.item_writers = [JsonlWriter(sys.stdout)]
        else:
            opts = WriterOptions(out_dir=out_dir, classes=classes, simplify=simplify, vid_stride=vid_stride)
            self.item_writers = item_writers(formats, opts)
        self.journal = None if stream else journal.AppendLog(journal.records_path(out_dir, rank))
        self.failure_log = None if stream else journal.AppendLog(journal.failures_path(out_dir, rank))
        self.processed = self.instances = self.failed = 0
        self.failures: list[dict] = []

    def __call__(self, job) -> None:
        kind, item, payload, det = job
        if kind == "fail":
            return self._failure(item, payload)
        if kind == "end":
            return self._end_video(item)
        try:
            instances = instance_records(
                det, self.classes, mask_format=self.mask_format, simplify=self.simplify
            )
            for writer in self.item_writers:
                writer.write(item, payload, det, instances)
        except Exception as e:  # noqa: BLE001 - this input fails, the run goes on (unless every input would)
            if _is_fatal_write_error(e, self.journal is None):
                raise
            self._discard(item)
            self._failure(item, f"writing its outputs failed: {type(e).__name__}: {e}")
            return
        if self.journal is not None:  # last: a journal line means every file of this input is in place
            self.journal.append_line(record_line(item, det, instances))
        self.processed += 1
        self.instances += len(instances)
        self.progress.advance()

    def _discard(self, item: InputItem) -> None:
        """Remove the per-item files a failed input got before the failure (a video's overlay frame stays:
        its frames are journaled only once committed, and `--resume` redoes the input)."""
        for writer in self.item_writers:
            path_for = getattr(writer, "path_for", None)
            if path_for is None or (item.frame is not None and hasattr(writer, "end_video")):
                continue
            with contextlib.suppress(Exception):
                path_for(item).unlink(missing_ok=True)

    def _end_video(self, item: InputItem) -> None:
        """`item`'s video has no more frames in this run: commit its overlay (frees its encoder). A failure
        is reported, not fatal: the video's frames are then in no committed segment, to redo on resume."""
        if self.journal is not None:  # its held lines first: a committed overlay then means journaled frames
            self.journal.commit()
        for writer in self.item_writers:
            end = getattr(writer, "end_video", None)
            if end is None:
                continue
            try:
                end(item)
            except Exception as e:  # noqa: BLE001 - reported; resume redoes the frames
                if _is_fatal_write_error(e, self.journal is None):
                    raise
                self.progress.say(f"warning: the overlay video of {item.path} could not be written: {e}")

    def _failure(self, item: InputItem, reason: str) -> None:
        rec = {"id": item.id, "path": item.path, "file_name": item.rel_path, "reason": reason}
        if item.frame is not None:
            rec["frame"] = item.frame
        if self.failure_log is not None:
            self.failure_log.append(rec)
        self.failed += 1
        if len(self.failures) < 20:
            self.failures.append(rec)
        if not self.quiet:
            self.progress.say(f"warning: skipped {describe_failure(rec)}")
        self.progress.advance(failed=self.failed)

    def close(self) -> None:
        errors = []
        for writer in self.item_writers:
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001 - close the rest, then report
                errors.append(e)
        for log in (self.journal, self.failure_log):
            if log is not None:
                log.close()
        if errors:
            raise errors[0]


_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EPIPE, errno.EIO}


def _is_fatal_write_error(error: BaseException, streaming: bool) -> bool:
    """Whether a write error would hit every input alike (disk full, read-only, broken pipe), so the run
    should stop rather than record each input as failed."""
    if streaming and (isinstance(error, OSError) or "closed file" in str(error)):  # stdout broken or closed
        return True
    return isinstance(error, OSError) and error.errno in _FATAL_ERRNOS


def describe_failure(failure: dict) -> str:
    """`path[ frame N]: reason`, without repeating the path when the reason already names it."""
    where = str(failure.get("path"))
    if failure.get("frame") is not None:
        where += f" frame {failure['frame']}"
    reason = str(failure.get("reason"))
    return reason if reason.startswith(str(failure.get("path"))) else f"{where}: {reason}"
