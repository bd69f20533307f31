"""`predict`: a whole run to an output folder (or jsonl lines on stdout), resumable and shardable.

Data flow: sources -> InputItems (ids fixed by the listing) -> the run folder is locked, started or resumed
(`run_folder`, `journal`) -> this rank's share of the inputs not done yet -> `Predictor.stream` (decode,
batch, predict, track) -> a writer thread (`OutputSink`): records, per-item files, then the journal line
(the commit point for --resume) -> after every rank is done, rank 0 assembles the final files from the
journals (`mrseg.outputs.finalize`).
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from mrseg.engine.distributed import join
from mrseg.engine.predict import journal
from mrseg.engine.predict.predictor import PredictError, Predictor, device_note, resolve_device
from mrseg.engine.predict.run_folder import STATE_DIR, check_same_lock, resolve_out_dir, start_state
from mrseg.engine.predict.run_lock import RunLock
from mrseg.engine.predict.sink import OutputSink
from mrseg.engine.predict.stream import Failure, group_units
from mrseg.engine.predict.tracker import Tracker
from mrseg.engine.predict.writer import WriterThread
from mrseg.engine.progress import ProgressBar
from mrseg.outputs.detections import InputItem
from mrseg.outputs.formats import FormatError, finalize, needs_image, parse_formats
from mrseg.outputs.overlay import OverlayWriter
from mrseg.outputs.video_segments import committed_segments, parts_dir

# Only the coordination uses torch.distributed (a barrier at the end and a few small objects), over gloo so
# that it works on CPU and GPU alike; the model runs independently on each rank. Ranks finish their shares at
# different times: the end barrier must wait for the slowest.
_BARRIER_TIMEOUT = datetime.timedelta(days=2)


@dataclass
class PredictSummary:
    """What a `predict` run did (over all ranks)."""

    out_dir: Path | None
    total: int = 0  # inputs in the sources
    processed: int = 0  # written by this run
    skipped: int = 0  # already done by an earlier run (--resume)
    failed: int = 0  # inputs that could not be read, predicted or written (the whole run; failures.jsonl)
    instances: int = 0  # instances written by this run
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[dict] = field(default_factory=list)  # the first few failures, for a summary
    rank: int = 0  # under torchrun, this process's rank (rank 0 reports for all)


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C: what was finished is written and journaled; `summary` says where, to resume."""

    def __init__(self, summary: PredictSummary):
        super().__init__("interrupted")
        self.summary = summary


def predict(
    sources: Sequence[str],
    *,
    weights: str | Path | None = None,
    arch: str | None = None,
    formats: Sequence[str] | str | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
    score: float = 0.5,
    classes: Iterable[str | int] | None = None,
    mask_format: str = "polygon",
    simplify: float = 1.0,
    batch: int | None = None,
    device: str = "auto",
    workers: int = 2,
    resume: bool = False,
    quiet: bool = False,
    vid_stride: int = 1,
    tile: int | None = None,
    tile_overlap: float = 0.2,
    max_pixels: int | None = None,
    precision: str = "fp32",
    fuse: bool = True,
    predictor: Predictor | None = None,
    stdin=None,
) -> PredictSummary:
    """Predict every input of `sources` and write the outputs to `out` (`-`: jsonl lines on stdout).

    The options are the CLI's (see `mrseg predict --help`); `predictor` replaces weights/arch/device/score/
    classes/tile/batch/max_pixels/precision/fuse with an existing `Predictor`, `stdin` is read for a `-`
    source.
    Under torchrun each rank takes every world-th input (a video as one input) and rank 0 writes the final
    files once all are done. Returns the summary; raises `PredictInterrupted` on Ctrl-C after flushing and
    journaling what was done, `PredictError` / `ValueError` for bad options, sources or weights.
    """
    started = time.monotonic()
    stream = str(out) == "-"
    try:
        formats = parse_formats(formats, stream)
    except FormatError as e:
        raise PredictError(str(e)) from None
    if mask_format not in ("polygon", "rle"):
        raise PredictError(f"--mask-format {mask_format}: choose polygon or rle")
    if vid_stride < 1:
        raise PredictError(f"--vid-stride must be >= 1, got {vid_stride}")
    if stream and resume:
        raise PredictError("--resume needs an output folder; it can't resume a stream to stdout (--out -)")
    if workers < 0:
        raise PredictError(f"--workers must be >= 0, got {workers}")

    rank = join("gloo", _BARRIER_TIMEOUT)
    lock: RunLock | None = None
    made: list[Path] = []  # folders this run created, removed again if it stops before writing anything
    try:
        if stream and rank.enabled:
            raise PredictError("--out - (stdout) works in one process only; under torchrun give --out DIR")

        # Rank 0 decides the folder, locks it for the whole run (one lock for all ranks) and lists the inputs
        # (before the slow model load, so bad sources fail fast); every rank gets the same list, hence ids.
        def start():
            nonlocal lock
            from mrseg.data.sources import collect_items

            folder = None if stream else resolve_out_dir(out, exist_ok=exist_ok, resume=resume)
            if folder is not None:
                made.extend(f for f in (folder, folder / STATE_DIR) if not f.exists())
                lock = RunLock.acquire(folder)
                if lock.note and not quiet:
                    print(lock.note, file=sys.stderr)
            exclude = [folder] if folder is not None else []
            items = collect_items(list(sources), vid_stride=vid_stride, stdin=stdin, exclude=exclude)
            return folder, items, lock and lock.token()

        out_dir, items, token = rank.on_main(start)
        if rank.enabled and not stream:  # the other ranks must see rank 0's lock: a shared --out
            # (not rank 0: reading the file through a new descriptor would drop its POSIX lock)
            mine = None if rank.is_main else check_same_lock(out_dir, token)
            problems = [p for p in rank.gather(mine) if p]
            if problems:
                raise PredictError(problems[0])
        notes: list[str] = []
        if predictor is None:
            dev = resolve_device(device, rank.local_rank, notes=notes,
                                 needs_kernels=not str(weights).lower().endswith(".onnx"))  # fmt: skip
            predictor = Predictor(
                weights, arch=arch, device=dev, score=score,
                classes=classes, tile=tile, tile_overlap=tile_overlap, batch=batch, max_pixels=max_pixels,
                precision=precision, fuse=fuse, mask_crops=True,
            )  # fmt: skip
        if rank.is_main and not quiet:  # once, at start: what runs the model
            for line in [*notes, device_note(predictor)]:
                print(line, file=sys.stderr)
        state = journal.ResumeState()
        if not stream:
            meta = {"sources": [str(s) for s in sources], "vid_stride": vid_stride, "formats": formats,
                    "world_size": rank.world, "weights": str(weights), "num_items": len(items),
                    "precision": predictor.precision,
                    "fused": predictor.net is not predictor.model}  # fmt: skip
            if rank.is_main:
                start_state(out_dir, meta, resume=resume, items=items)
                if resume:
                    for path in journal.all_records_paths(out_dir) + journal.all_failures_paths(out_dir):
                        journal.repair(path)
            out_dir = Path(rank.broadcast(str(out_dir) if out_dir else None))
            rank.barrier()
            if resume:
                state = journal.read_state(out_dir)
                if "overlay" in formats:  # frames whose overlay video segment a crash lost are done again
                    lost = _lost_overlay_frames(items, state, out_dir)
                    if lost:
                        state = journal.read_state(out_dir, exclude=lost)
        skip = state.done_ids  # inputs that failed are tried again: the cause may have been fixed since
        summary = PredictSummary(out_dir=out_dir, total=len(items), rank=rank.rank,
                                 skipped=len(skip & {it.id for it in items}))  # fmt: skip

        # unit u (an image, or a whole video so its track ids stay consistent) goes to rank u % world
        mine = group_units(items)[rank.rank :: rank.world]
        todo = [it for unit in mine for it in unit if it.id not in skip]
        show = rank.is_main and not (quiet or stream)
        progress = ProgressBar(
            "predict", len(todo), "bar", "count", "{rate} img/s", "eta", "{failed} failed",
            show=show, failed=0,
        )  # fmt: skip
        sink = OutputSink(
            out_dir=out_dir, rank=rank.rank, formats=formats, classes=predictor.classes,
            mask_format=mask_format, simplify=simplify, vid_stride=vid_stride, stream=stream, quiet=quiet,
            progress=progress,
        )  # fmt: skip
        interrupted = _drain(
            predictor, todo, sink, queue_size=max(2, batch or predictor.batch), vid_stride=vid_stride,
            workers=workers, batch=batch, max_pixels=max_pixels, keep_images=_kept_images(formats),
            seed_tracker=partial(_seed_tracker, state),
        )  # fmt: skip
        if interrupted:
            summary.processed, summary.instances, summary.failed = sink.processed, sink.instances, sink.failed
            summary.failures, summary.interrupted = sink.failures, True
            summary.seconds = time.monotonic() - started
            raise PredictInterrupted(summary)
        local = {"processed": sink.processed, "instances": sink.instances, "failed": sink.failed,
                 "failures": sink.failures}  # fmt: skip

        rank.barrier()
        parts = rank.gather(local)
        failed_total = incomplete = None
        if rank.is_main and not stream and rank.enabled:  # each rank's journal reached rank 0's disk?
            left, seen = journal.unaccounted(out_dir, [it.id for it in items])
            incomplete = _missing_parts(left, parts, seen, out_dir)
        incomplete = rank.broadcast(incomplete)
        if incomplete:
            raise PredictError(incomplete)
        if rank.is_main and not stream:
            finalize(out_dir, formats, journal.all_records_paths(out_dir), predictor.classes)
            failed_total = journal.merge_failures(out_dir)
        failed_total = rank.broadcast(failed_total)
        summary.processed = sum(p["processed"] for p in parts)
        summary.instances = sum(p["instances"] for p in parts)
        summary.failed = failed_total if failed_total is not None else sum(p["failed"] for p in parts)
        summary.failures = [f for p in parts for f in p["failures"]][:20]
        if summary.failed and not summary.failures and out_dir is not None:  # all failed in an earlier run
            summary.failures = list(journal.iter_lines(out_dir / "failures.jsonl"))[:20]
        summary.seconds = time.monotonic() - started
        rank.barrier()  # nobody exits (which makes torchrun stop the others) before every rank is done
        return summary
    finally:
        if lock is not None:
            lock.release()
            for folder in reversed(made):  # a run that failed to start (bad weights, no inputs): left empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        rank.close()


def _missing_parts(unaccounted: int, parts: list[dict], seen_ranks: set[int], out_dir) -> str | None:
    """None when rank 0's journals account for every input (done or failed), else the error to stop on.

    `unaccounted`: inputs neither journaled as done nor as failed in what rank 0 sees of OUT/.mrseg;
    `parts`: each rank's `{"processed", "failed"}` counts of this run (gathered); `seen_ranks`: the ranks
    whose journal files rank 0 sees. Ranks on another node write their journals on that node's disk unless
    `--out` is shared: their inputs would silently be missing from the final files."""
    if unaccounted == 0:
        return None
    done = [int(p.get("processed", 0)) + int(p.get("failed", 0)) for p in parts]
    reported, unseen = sum(done), [r for r, n in enumerate(done) if n > 0 and r not in seen_ranks]
    return (
        f"{unaccounted} input(s) are neither in the journals nor in the failure logs that rank 0 sees in "
        f"{out_dir}/.mrseg (the ranks reported {reported} input(s) written or failed this run"
        + (f"; no journal of rank(s) {', '.join(map(str, unseen))} is visible here" if unseen else "")
        + "). The ranks wrote to different disks: a multi-node run needs --out on a filesystem shared by "
        "every node (NFS, Lustre, ...). No final file was written. To finish, copy every node's "
        "OUT/.mrseg/records-*.jsonl and failures-*.jsonl into this OUT/.mrseg/ and run again with --resume."
    )


def _kept_images(formats: Sequence[str]) -> bool | str:
    """Which decoded images the writers need: all (overlay), or video frames' (labelme and YOLO write them
    beside their files: a frame has no image file to point to or link)."""
    if needs_image(formats):
        return True
    return "frames" if {"labelme", "yolo"} & set(formats) else False


def _seed_tracker(state: journal.ResumeState, tracker: Tracker, video: str | None) -> None:
    """Continue a video's tracks from its last journaled frame; new ids above any it already used."""
    tracker.next_id = max(tracker.next_id, state.max_track_ids.get(video, 0) + 1)
    last = state.last_frames.get(video)
    inst = [r for r in (last["instances"] if last else []) if r.get("track_id") is not None]
    if inst:
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in inst)], np.float32)
        tracker.seed(boxes, np.array([r["label"] for r in inst]), np.array([r["track_id"] for r in inst]))


def _lost_overlay_frames(items: list[InputItem], state: journal.ResumeState, out_dir: Path) -> set[int]:
    """Ids of journaled video frames that no complete overlay segment holds (the run writing them was killed
    before its segment was finished). A video whose segment folder is gone was assembled by a finished run."""
    done_frames: dict[str, list[InputItem]] = {}
    for it in items:
        if it.frame is not None and it.id in state.done_ids:
            done_frames.setdefault(it.path, []).append(it)
    lost: set[int] = set()
    for frames in done_frames.values():
        parts = parts_dir(out_dir, OverlayWriter.video_stem(frames[0]))
        if not parts.is_dir():
            continue
        held = {int(i) for _, meta in committed_segments(parts) for i in meta.get("ids", [])}
        lost.update(it.id for it in frames if it.id not in held)
    return lost


def _drain(
    predictor: Predictor, items: list[InputItem], sink: OutputSink, queue_size: int, **stream_options
) -> bool:
    """Stream `items` through `predictor` into the writer thread; each video's end goes in as soon as its
    last frame of this run is through (its overlay is committed then, not at the end of the run). Returns
    True when stopped by Ctrl-C."""
    # Each queued input holds its masks: keep the queue short (a big photo can hold 100s of MB).
    writer = WriterThread(sink, maxsize=queue_size)
    interrupted = False
    with sink.progress:  # stays up until the writer has finished the last input
        try:
            end_video = lambda item: writer.put(("end", item, None, None))  # noqa: E731
            for item, result in predictor.stream(items, on_video_end=end_video, **stream_options):
                if isinstance(result, Failure):
                    writer.put(("fail", item, result.reason, None))
                else:
                    writer.put(("ok", item, result.image, result))
        except KeyboardInterrupt:
            interrupted = True  # what was predicted is still written and journaled below
        finally:
            try:
                writer.close()
            finally:
                sink.close()
    return interrupted
