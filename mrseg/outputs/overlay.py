"""`overlay/<name>.jpg` (images) and `overlay/<video>.mp4` (video frames): the detections drawn on the input.

Masks are filled semi-transparently and outlined, boxes drawn, and each instance labelled with its class name
and score; a keypoint model's keypoints are drawn as dots joined by the category's `skeleton` (a box-only
model's instances are their boxes). Colours follow `track_id` when present (one object keeps its colour
across frames), else the class.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from mrseg.outputs.atomic import atomic_write_bytes
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.mask_crop import instance_crop
from mrseg.outputs.paths import output_path, output_stem, safe_relative_path, shorten_path
from mrseg.outputs.video_segments import SegmentWriter, assemble, parts_dir

# Distinct, saturated RGB colours (Tableau 20 reordered so neighbours differ).
PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
        (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
        (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
        (219, 219, 141), (158, 218, 229),
    ],
    dtype=np.uint8,
)  # fmt: skip


def instance_color(det: Detections, i: int) -> tuple[int, int, int]:
    """RGB colour of instance `i`: by track id when tracked, else by label."""
    key = int(det.track_ids[i]) if det.track_ids is not None else int(det.labels[i])
    return tuple(int(c) for c in PALETTE[key % len(PALETTE)])


def draw_keypoints(
    out: np.ndarray, points: np.ndarray, skeleton, color: tuple[int, int, int], thickness: int
) -> None:
    """Draws one instance's keypoints [K, 3] (visibility > 0 when predicted) into `out` (uint8 [H, W, 3]):
    `skeleton`'s limbs (1-based pairs, COCO's) as lines, each keypoint as a dot with a dark rim."""
    shift = 4  # sub-pixel positions: cv2 draws at coordinates * 2**shift, pixel centres at integers
    pts = np.round((np.asarray(points, np.float64)[:, :2] - 0.5) * (1 << shift)).astype(np.int64)
    seen = np.asarray(points)[:, 2] > 0
    for a, b in skeleton or ():
        a, b = int(a) - 1, int(b) - 1
        if 0 <= a < len(pts) and 0 <= b < len(pts) and seen[a] and seen[b]:
            start, end = tuple(map(int, pts[a])), tuple(map(int, pts[b]))
            cv2.line(out, start, end, color, thickness, cv2.LINE_AA, shift)
    radius = (thickness + 2) << shift
    for k in np.flatnonzero(seen):
        centre = tuple(map(int, pts[k]))
        cv2.circle(out, centre, radius, (0, 0, 0), -1, cv2.LINE_AA, shift)
        cv2.circle(out, centre, radius * 2 // 3, color, -1, cv2.LINE_AA, shift)


def draw_detections(
    image_rgb: np.ndarray,
    det: Detections,
    instances: list[dict] | None = None,
    alpha: float = 0.45,
    classes: list[dict] | None = None,
) -> np.ndarray:
    """A copy of `image_rgb` (uint8 `[H, W, 3]`) with the detections drawn; `instances` supply the names,
    `classes` (the model's, `classes[label - 1]`) the keypoint skeletons."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    scale = max(h, w) / 1000.0
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for i in range(len(det)):
        color = instance_color(det, i)
        if det.masks is not None:
            mc = instance_crop(det.masks, i, det.boxes[i])
            if mc.crop.size:  # blend and outline inside the mask's bounding box only
                x0, y0, x1, y1 = mc.bounds
                m = mc.crop
                region = out[y0:y1, x0:x1]
                blended = (region[m] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)
                region[m] = blended
                contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(region, contours, -1, color, thickness)
        x0, y0, x1, y1 = (int(round(float(v))) for v in det.boxes[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        if det.keypoints is not None:
            label = int(det.labels[i])
            category = classes[label - 1] if classes and 1 <= label <= len(classes) else {}
            draw_keypoints(out, det.keypoints[i], category.get("skeleton"), color, thickness)
        name = instances[i]["name"] if instances and i < len(instances) else f"class {int(det.labels[i])}"
        text = f"{name} {float(det.scores[i]):.2f}"
        if det.track_ids is not None:
            text = f"#{int(det.track_ids[i])} {text}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else y0 + th + base + 2
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 2, ty + 1), color, -1)
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(out, text, (x0 + 1, ty - base), font, font_scale, text_color, thickness, cv2.LINE_AA)
    return out


class OverlayWriter:
    """Writes `OUT/overlay/<name>.jpg` per image and `OUT/overlay/<video>.mp4` from video frames.

    A video's frames (in order, all on this writer) go to this run's numbered segment (`video_segments`);
    `end_video()` (once the video's last frame of this run is written) and `close()` commit the segment and
    rebuild `overlay/<video>.mp4` from all its segments, so `--resume` extends the video instead of replacing
    it, and a run killed later keeps every video it finished. Frame rate: the source's (`item.fps`) divided by
    `vid_stride`, so the overlay plays at the original speed.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        alpha: float = 0.45,
        jpeg_quality: int = 90,
        vid_stride: int = 1,
        classes: list[dict] | None = None,
    ):
        self.out_dir = out_dir
        self.classes = classes
        self.alpha = alpha
        self.jpeg_quality = jpeg_quality
        self.vid_stride = vid_stride
        self._videos: dict[Path, SegmentWriter] = {}

    def path_for(self, item: InputItem) -> Path:
        if item.frame is not None:
            return output_path(self.out_dir, "overlay", self.video_stem(item), suffix=".mp4")
        return output_path(self.out_dir, "overlay", output_stem(item), suffix=".jpg")

    @staticmethod
    def video_stem(item: InputItem) -> str:
        """`overlay/<stem>.mp4` of a video frame: the frame's output name less its last part, made safe."""
        if item.name:
            stem = str(PurePosixPath(output_stem(item)).parent)
        else:
            stem = str(PurePosixPath(item.video or item.rel_path).with_suffix(""))
        return shorten_path(safe_relative_path(stem))

    def write(
        self, item: InputItem, image_rgb: np.ndarray | None, det: Detections, instances: list[dict]
    ) -> None:
        if image_rgb is None:
            raise ValueError(f"overlay: no image given for {item.rel_path}; the overlay needs the pixels")
        drawn = draw_detections(image_rgb, det, instances, self.alpha, self.classes)
        drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        path = self.path_for(item)
        if item.frame is None:
            ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise RuntimeError(f"overlay: OpenCV could not encode the overlay for {item.rel_path}")
            atomic_write_bytes(path, buf.tobytes())
            return
        if path not in self._videos:
            parts = parts_dir(self.out_dir, self.video_stem(item))
            fps = (item.fps or 30.0) / self.vid_stride
            self._videos[path] = SegmentWriter(parts, fps, (drawn.shape[1], drawn.shape[0]))
        self._videos[path].write(drawn, item.frame, item.id)

    def end_video(self, item: InputItem) -> Path | None:
        """No more frames of `item`'s video come in this run: commit its segment (closing the encoder), then
        rebuild `overlay/<video>.mp4` from all its segments. Returns that path (None: no frame written)."""
        path = self.path_for(item)
        segment = self._videos.pop(path, None)
        if segment is None:
            return None
        segment.commit()
        assemble(segment.parts, path)
        return path

    @property
    def open_videos(self) -> int:
        """How many videos have an open encoder (frames written, not yet committed)."""
        return len(self._videos)

    def close(self) -> None:
        """Commit every open video segment, then rebuild each of those videos from all its segments."""
        videos, self._videos = self._videos, {}
        errors = []
        for path, segment in videos.items():
            try:
                segment.commit()
                assemble(segment.parts, path)
            except Exception as e:  # noqa: BLE001 - finish the other videos, then report
                errors.append(e)
        if errors:
            raise errors[0]
