"""Overlay videos that survive `--resume`: each run writes its frames of a video to a numbered segment, and
`overlay/<video>.mp4` is the segments joined in frame order.

Layout, in the run's state folder (cleared by a fresh run, kept by `--resume`):
`OUT/.mrseg/overlay/<video stem>.parts/part-0001.mp4` and its manifest `part-0001.json`
(`{"fps", "size": [w, h], "frames": [frame index...], "ids": [image id...]}`). A segment counts only once its
manifest exists (written after the video is complete), so a run killed mid-segment leaves no half-written
segment: its frames are absent, `predict --resume` predicts them again, and `finalize` warns about any
journaled frame that still no segment holds.

Joining: frames in frame order, a frame in several segments (redone after a crash) from the latest. A single
segment is linked into place; several are decoded and re-encoded (mp4v). Written under a temporary name and
renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from mrseg.outputs.atomic import atomic_write_text, fsync_path, temp_sibling
from mrseg.outputs.paths import STATE_DIR

STORE = "overlay"
PARTS_SUFFIX = ".parts"
_PART = re.compile(r"^part-(\d+)\.(mp4|json)$")
_ASSEMBLED = "assembled.json"
FOURCC = "mp4v"


def store_dir(out_dir: str | os.PathLike) -> Path:
    """`OUT/.mrseg/overlay`: where every video's segments live."""
    return Path(out_dir) / STATE_DIR / STORE


def parts_dir(out_dir: str | os.PathLike, stem: str) -> Path:
    """The segment folder of the video written to `OUT/overlay/<stem>.mp4` (`stem` already made safe)."""
    return store_dir(out_dir) / f"{stem}{PARTS_SUFFIX}"


def final_path(out_dir: str | os.PathLike, parts: Path) -> Path:
    """`OUT/overlay/<stem>.mp4` for a segment folder."""
    rel = parts.relative_to(store_dir(out_dir)).as_posix()[: -len(PARTS_SUFFIX)]
    return Path(out_dir) / "overlay" / f"{rel}.mp4"


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"overlay: OpenCV cannot write the video {path} ({FOURCC} codec unavailable?)")
    return writer


class SegmentWriter:
    """Frames of one video from one run: the next numbered segment in `parts`, committed by `commit()`."""

    def __init__(self, parts: Path, fps: float, size: tuple[int, int]):
        parts.mkdir(parents=True, exist_ok=True)
        used = [int(m.group(1)) for p in parts.iterdir() if (m := _PART.match(p.name))]
        self.number = max(used, default=0) + 1
        self.parts, self.fps, self.size = parts, float(fps), (int(size[0]), int(size[1]))
        self.tmp = temp_sibling(parts / f"part-{self.number:04d}", ".tmp.mp4")
        self._writer = _open_writer(self.tmp, self.fps, self.size)
        self.frames: list[int] = []
        self.ids: list[int] = []

    def write(self, frame_bgr: np.ndarray, frame_index: int, image_id: int) -> None:
        """Append one BGR frame `[H, W, 3]` (resized to the segment's size when it differs)."""
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size)
        self._writer.write(frame_bgr)
        self.frames.append(int(frame_index))
        self.ids.append(int(image_id))

    def commit(self) -> Path | None:
        """Finish the segment file and publish it with its manifest; None (and nothing left) when empty."""
        self._writer.release()
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return None
        video = self.parts / f"part-{self.number:04d}.mp4"
        try:
            fsync_path(self.tmp)  # the manifest, once on disk, vouches for a whole segment
            os.replace(self.tmp, video)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        manifest = {"fps": self.fps, "size": list(self.size), "frames": self.frames, "ids": self.ids}
        atomic_write_text(video.with_suffix(".json"), json.dumps(manifest))
        return video


def committed_segments(parts: Path) -> list[tuple[Path, dict]]:
    """The complete segments of a video, in the order they were written: (video file, manifest)."""
    out = []
    for manifest in sorted(parts.glob("part-*.json"), key=lambda p: int(_PART.match(p.name).group(1))):
        video = manifest.with_suffix(".mp4")
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            warnings.warn(f"overlay: skipping the segment {video}: unreadable manifest ({e})", stacklevel=2)
            continue
        if video.exists():
            out.append((video, meta))
    return out


def _frame_plan(segments: list[tuple[Path, dict]]) -> list[tuple[int, int]]:
    """(segment index, position in it) per output frame, in frame order; later segments win a frame."""
    source: dict[int, tuple[int, int]] = {}
    for s, (_, meta) in enumerate(segments):
        for pos, frame in enumerate(meta["frames"]):
            source[int(frame)] = (s, pos)
    return [source[f] for f in sorted(source)]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst, ".tmp.mp4")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (another file system, FAT, ...): copy
        shutil.copyfile(src, tmp)
        fsync_path(tmp)
    os.replace(tmp, dst)


def assemble(parts: Path, dst: Path) -> int:
    """Write `dst` from the committed segments in `parts`; returns its frame count (0: nothing written)."""
    segments = committed_segments(parts)
    plan = _frame_plan(segments)
    if not plan:
        return 0
    if len(segments) == 1 and [p for _, p in plan] == list(range(len(segments[0][1]["frames"]))):
        _link_or_copy(segments[0][0], dst)
    else:
        _join(segments, plan, dst)
    atomic_write_text(parts / _ASSEMBLED, json.dumps([p.name for p, _ in segments]))
    return len(plan)


def _join(segments: list[tuple[Path, dict]], plan: list[tuple[int, int]], dst: Path) -> None:
    fps = float(segments[0][1]["fps"])
    size = tuple(int(v) for v in segments[0][1]["size"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst, ".tmp.mp4")
    readers: dict[int, list] = {}  # segment -> [capture, position of the next frame it returns]
    writer = _open_writer(tmp, fps, size)
    try:
        for s, pos in plan:
            if s not in readers:
                readers[s] = [cv2.VideoCapture(str(segments[s][0])), 0]
            cap, at = readers[s]
            ok, frame = False, None
            while at <= pos:  # frames of one segment are used in increasing position: read forward
                ok, frame = cap.read()
                at += 1
                if not ok:
                    break
            readers[s][1] = at
            if not ok:
                raise RuntimeError(
                    f"overlay: cannot read frame {pos} of the segment {segments[s][0]} while joining {dst}; "
                    f"delete {segments[s][0].parent} and rerun without --resume to redo the overlay"
                )
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size)
            writer.write(frame)
        writer.release()
        fsync_path(tmp)  # the `assembled.json` stamp written next vouches for it
        os.replace(tmp, dst)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for cap, _ in readers.values():
            cap.release()


def is_assembled(out_dir: str | os.PathLike, parts: Path) -> bool:
    """Whether `overlay/<stem>.mp4` was last built from exactly the segments now in `parts`."""
    stamp = parts / _ASSEMBLED
    if not stamp.exists() or not final_path(out_dir, parts).exists():
        return False
    with contextlib.suppress(OSError, json.JSONDecodeError):
        return json.loads(stamp.read_text(encoding="utf-8")) == [p.name for p, _ in committed_segments(parts)]
    return False


def finish_videos(out_dir: str | os.PathLike, journal_records: Iterable[dict] = ()) -> dict[Path, int]:
    """End of a run: build every overlay video not yet built from its segments, warn about journaled video
    frames no segment holds (lost to a crash), delete the segments; {video path: frames} of those built."""
    store = store_dir(out_dir)
    if not store.is_dir():
        return {}
    all_parts = sorted(p for p in store.rglob(f"*{PARTS_SUFFIX}") if p.is_dir())
    built, held = {}, set()
    for parts in all_parts:
        for _, meta in committed_segments(parts):
            held.update(int(i) for i in meta.get("ids", []))
        dst = final_path(out_dir, parts)
        if not is_assembled(out_dir, parts):
            n = assemble(parts, dst)
            if n:
                built[dst] = n
    missing: dict[str, int] = {}
    for record in journal_records:
        image = record["image"]
        if image.get("frame") is not None and int(image["id"]) not in held:
            key = str(image.get("video") or image["file_name"])
            missing[key] = missing.get(key, 0) + 1
    for video, n in sorted(missing.items()):
        warnings.warn(
            f"overlay for {video}: {n} predicted frame(s) are missing from the overlay video (an earlier run "
            "stopped before writing them out); run again without --resume to redo the overlay",
            stacklevel=2,
        )
    shutil.rmtree(store, ignore_errors=True)
    return built
