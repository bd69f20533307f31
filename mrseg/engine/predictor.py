"""Prediction: `Predictor` (one model, images in, `Detections` out) and `predict` (a whole run to a folder).

`predict` data flow: sources -> InputItems -> DataLoader workers decode (a bad file becomes a failure record)
-> batches to the model under inference_mode -> Detections (score / class filter, track ids for video)
-> a writer thread: records, per-item files, then the journal line (the commit point for --resume)
-> after every rank is done, rank 0 assembles the final files from the journals (`mrseg.outputs.finalize`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrseg.engine import journal
from mrseg.engine.batches import Loaded, image_loader, video_loader
from mrseg.engine.oom import infer_with_fallback
from mrseg.engine.progress import RunProgress
from mrseg.engine.run_folder import check_same_lock, resolve_out_dir, start_state
from mrseg.engine.run_lock import RunLock
from mrseg.engine.shard import init_shard, missing_parts, units_for_rank
from mrseg.engine.tiling import merge_tiles, tile_windows
from mrseg.engine.tracker import Tracker
from mrseg.engine.writer import WriterThread
from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.mask_crop import CroppedMasks

FORMATS = ("coco", "coco-results", "jsonl", "labelme", "yolo", "overlay")


class PredictError(ValueError):
    """A run can't start or go on as asked; the message says what and what to do."""


class InferenceOutOfMemory(MemoryError):
    """An image ran out of memory in a batch, alone and in tiles; the message says what to try. `results`:
    every image's Detections, or for each image that failed, why (a `str`)."""

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C: what was finished is written and journaled; `summary` says where, to resume."""

    def __init__(self, summary: PredictSummary):
        super().__init__("interrupted")
        self.summary = summary


def _kernels_with_cuda() -> bool:
    """Whether mrseg_kernels (RoIAlign) was built with its CUDA kernels."""
    try:
        import mrseg_kernels

        return bool(mrseg_kernels.with_cuda())
    except (ImportError, AttributeError, RuntimeError):
        return False


def resolve_device(
    device: str | torch.device = "auto",
    local_rank: int = 0,
    *,
    needs_kernels: bool = True,
    notes: list[str] | None = None,
) -> torch.device:
    """The device to run on, made this process's current CUDA device (`torch.cuda.set_device`) when a GPU.

    `auto` -> `cuda:LOCAL_RANK` when CUDA is available and, for a model that runs mrseg's RoIAlign
    (`needs_kernels`; an .onnx model doesn't), mrseg_kernels was built with CUDA; else cpu, with a line in
    `notes` saying why when a GPU was there. `cuda` -> `cuda:LOCAL_RANK` (this torchrun rank's GPU). An
    explicit CUDA device that can't run (no CUDA, no such GPU, kernels built without CUDA) raises
    PredictError at start rather than failing at the first batch. Setting the current device keeps pinned
    memory and CUDA calls without an index off GPU 0 (which every rank would otherwise also use)."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and needs_kernels and not _kernels_with_cuda():
            name = "cpu"
            if notes is not None:
                notes.append(
                    "note: --device auto: a GPU is there but mrseg_kernels was built without CUDA, so the "
                    "model runs on the CPU; rebuild it with CUDA (pip install . with nvcc and CUDA_HOME set) "
                    "to use the GPU"
                )
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise PredictError(f"--device {device}: not a device name (use auto, cpu or cuda:N)") from e
    if dev.type == "cuda":
        if needs_kernels and not _kernels_with_cuda():
            raise PredictError(
                f"--device {device}: mrseg_kernels (RoIAlign) was built without CUDA; rebuild it with CUDA "
                "(pip install . with nvcc and CUDA_HOME set), or use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise PredictError(
                f"--device {device}: no such GPU (this machine has {count}: cuda:0..cuda:{count - 1})"
            )
        torch.cuda.set_device(dev)
    return dev


def device_note(predictor: Predictor) -> str:
    """`device: cuda:1 (NVIDIA H100, torch)` / `device: cpu (onnxruntime CPUExecutionProvider)`: what runs."""
    dev = predictor.device
    where = str(dev)
    if dev.type == "cuda":
        where += f" ({torch.cuda.get_device_name(dev)})"
    runs_on = getattr(predictor.model, "runs_on", None) or "torch"
    return f"device: {where}, model run by {runs_on}"


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The `torch.autocast` dtype for `--precision` on `device`: None for fp32 (no autocast); PredictError for
    a name or a device that can't run it."""
    if precision not in PRECISIONS:
        raise PredictError(f"--precision {precision}: choose {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cpu" and dtype == torch.float16:
        raise PredictError(
            "--precision fp16 runs on CUDA devices only (CPU kernels for float16 are slow or missing); "
            "on the CPU use --precision bf16, or fp32 (the default)"
        )
    if not torch.amp.is_autocast_available(device.type):
        raise PredictError(f"--precision {precision}: torch.autocast doesn't run on {device}; use fp32")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise PredictError(f"--precision bf16: {device} has no bfloat16 support; use --precision fp16")
    return dtype


def load_weights(weights: str | Path, arch: str | None, device: torch.device):
    """(model, ModelInfo) for a zoo name, an mrseg checkpoint, a state-dict file or an exported .onnx."""
    if str(weights).lower().endswith(".onnx"):
        if importlib.util.find_spec("mrseg.onnx_runtime") is None:
            raise PredictError(
                f"--weights {weights}: running .onnx models needs mrseg.onnx_runtime, which this install "
                "doesn't have; pass the .pt checkpoint the model was exported from instead"
            )
        from mrseg import onnx_runtime

        return onnx_runtime.load_model(weights, device=device)
    from mrseg.model import zoo

    return zoo.load_model(weights, arch=arch, device=device)


def resolve_class_filter(wanted: Iterable[str | int] | None, classes: Sequence[dict]) -> set[int] | None:
    """Model labels (1..K) to emit: those of `--classes` (names, case-insensitive, or category ids), else
    every label whose class is a real category; None when that is every label (nothing to drop).

    Placeholder slots ("N/A", e.g. COCO ids 12, 26, 29, ...) are never emitted: their detections are dropped
    here, before any writer, so no output names a category its category list lacks. Asking for one, or for a
    name / id the model lacks, raises PredictError listing the valid names.
    """
    from mrseg.model.coco_classes import is_placeholder

    real = {i + 1 for i, c in enumerate(classes) if not is_placeholder(c)}
    wanted = [w for w in (wanted or []) if str(w).strip()]
    if not wanted:
        return None if len(real) == len(classes) else real
    by_name = {str(c["name"]).lower(): i + 1 for i, c in enumerate(classes) if i + 1 in real}
    by_id = {int(c["id"]): i + 1 for i, c in enumerate(classes) if i + 1 in real}
    labels = set()
    for w in wanted:
        key = str(w).strip()
        if key.lower() in by_name:
            labels.add(by_name[key.lower()])
        elif key.isdigit() and int(key) in by_id:
            labels.add(by_id[int(key)])
        else:
            raise PredictError(_class_filter_error(key, classes, real))
    return labels


def _class_filter_error(key: str, classes: Sequence[dict], real: set[int]) -> str:
    slots = {str(c["name"]).lower() for c in classes} | {str(c["id"]) for c in classes}
    what = "an unused slot with no category" if key.lower() in slots else "not a class of this model"
    names = ", ".join(f"{c['name']} ({c['id']})" for i, c in enumerate(classes) if i + 1 in real)
    return f"--classes: {key!r} is {what}; give names or category ids (comma-separated) from: {names}"


class Predictor:
    """A loaded model that turns images into `Detections`.

    >>> p = Predictor(weights="coco-r50-fpn", device="auto", score=0.5)
    >>> det = p("photo.jpg")          # or an RGB uint8 [H, W, 3] array
    >>> dets = p.predict_batch([a, b])

    Args:
        weights: zoo name, mrseg checkpoint, state-dict file (with `arch`) or `.onnx`.
        model, model_classes: an already built model with the forward contract of docs/internals.md and its
            class list, instead of `weights`.
        score: keep instances scoring at least this. classes: keep only these class names / ids.
            Placeholder classes ("N/A" slots of COCO's 91 labels) are never returned (`resolve_class_filter`).
        tile, tile_overlap: predict images larger than `tile` pixels in overlapping tiles.
        batch: images per model call in `predict_batch` (and tiles per call).
        fuse: run an inference copy of an mrseg Mask R-CNN with its BatchNorms folded into the convs and
            channels_last weights (`mrseg.model.fuse.fuse_for_inference`): faster, same detections up to
            float rounding. `self.model` stays the model as given; the copy is made once, here.
        precision: "fp32" (default), or "fp16" (CUDA) / "bf16" to run an mrseg Mask R-CNN under
            `torch.autocast`: faster on GPUs, detections may differ slightly. Boxes and scores come back
            float32 and masks bool whatever the precision.
        mask_crops: return masks as `mrseg.outputs.mask_crop.CroppedMasks` (each instance's mask as the crop
            of its box; reads like the bool [N, H, W] array, `np.asarray` gives that array) instead of a
            bool [N, H, W] array. `predict` uses crops: no full-size mask per instance is ever made.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        arch: str | None = None,
        device: str | torch.device = "auto",
        score: float = 0.5,
        classes: Iterable[str | int] | None = None,
        tile: int | None = None,
        tile_overlap: float = 0.2,
        batch: int | None = None,
        max_pixels: int | None = None,
        model: torch.nn.Module | None = None,
        model_classes: Sequence[dict] | None = None,
        fuse: bool = True,
        precision: str = "fp32",
        mask_crops: bool = False,
    ):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = precision
        self.autocast_dtype = autocast_dtype(precision, self.device)  # before the (slow) model load
        if model is None:
            if weights is None:
                raise PredictError("Predictor needs weights= (a zoo name or a file) or model=")
            model, info = load_weights(weights, arch, self.device)
            model_classes = info.classes
        if model_classes is None:
            raise PredictError("Predictor(model=...) also needs model_classes=[{'id':..,'name':..}, ...]")
        if not 0.0 <= score <= 1.0:
            raise PredictError(f"--score must be in [0, 1], got {score}")
        if tile is not None:
            tile_windows(tile, tile, tile, tile_overlap)  # validates both
        self.model = model.eval().to(self.device) if isinstance(model, torch.nn.Module) else model
        self.net = self.model  # what runs: the model, or its fused inference copy
        if fuse:
            from mrseg.model.fuse import fuse_for_inference
            from mrseg.model.maskrcnn import MaskRCNN

            if isinstance(self.model, MaskRCNN):
                self.net = fuse_for_inference(self.model)
                # The copy is ours to tune: drop detections scoring under `score` before the mask head and
                # the paste rather than after. NMS only lets a box suppress lower-scoring ones, so the kept
                # set is the same; nextafter keeps a score equal to `score` (the head keeps scores > thresh).
                heads = self.net.roi_heads
                heads.score_thresh = max(heads.score_thresh, math.nextafter(float(score), -math.inf))
                # Masks are pasted in `_filter`, into box-sized crops: no full-size mask per instance.
                self.net.paste_masks = False
        self.classes = list(model_classes)
        self.score = float(score)
        self.keep_labels = resolve_class_filter(classes, self.classes)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.batch = batch or (4 if self.device.type == "cuda" else 1)
        self.max_pixels = max_pixels
        self.mask_crops = mask_crops
        if self.autocast_dtype is not None:
            from mrseg.model.maskrcnn import MaskRCNN

            if not isinstance(self.model, MaskRCNN):
                raise PredictError(
                    f"--precision {precision} runs mrseg's own Mask R-CNN under torch.autocast; this model "
                    f"({type(self.model).__name__}, e.g. from an .onnx file) runs at the precision it was "
                    "built with: use --precision fp32, or the .pt checkpoint it was exported from"
                )

    def __call__(self, image: np.ndarray | str | Path) -> Detections:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray | str | Path]) -> list[Detections]:
        """Detections for each image (RGB uint8 [H, W, 3] arrays or paths), `batch` at a time."""
        out: list[Detections] = []
        for start in range(0, len(images), self.batch):
            chunk = [self._as_tensor(im) for im in images[start : start + self.batch]]
            out.extend(self.infer(chunk))
        return out

    def _as_tensor(self, image: np.ndarray | str | Path) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            from mrseg.data.images import read_image

            image = (
                read_image(str(image)) if self.max_pixels is None else read_image(str(image), self.max_pixels)
            )
        if isinstance(image, torch.Tensor):
            return image
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise PredictError(
                f"Predictor takes an RGB uint8 array [H, W, 3]; got dtype {arr.dtype}, shape {arr.shape}"
            )
        return torch.from_numpy(np.ascontiguousarray(arr))

    @torch.inference_mode()
    def infer(self, images: list[torch.Tensor]) -> list[Detections]:
        """Detections for uint8 [H, W, 3] tensors (CPU, pinned when the model is on a GPU). A batch that runs
        out of memory is retried image by image, then each such image in tiles, one per call
        (`mrseg.engine.oom`); `InferenceOutOfMemory` (with the other images' detections in `results`) when an
        image can't be predicted even so."""
        out = infer_with_fallback(images, self._infer_whole, self._infer_tiled, self.device, self.tile)
        failed = [r for r in out if isinstance(r, str)]
        if failed:
            raise InferenceOutOfMemory(failed[0], results=out)
        return out

    def _infer_whole(self, images: list[torch.Tensor]) -> list[Detections]:
        out: list[Detections | None] = [None] * len(images)
        whole = [i for i, im in enumerate(images) if not self._needs_tiles(im)]
        if whole:
            results = self._run_model([images[i] for i in whole], self.mask_crops)
            for i, res in zip(whole, results, strict=True):
                h, w = images[i].shape[:2]
                out[i] = Detections(width=w, height=h, **res)
        for i, im in enumerate(images):
            if out[i] is None:
                out[i] = self._infer_tiled(im)
        return out

    def _needs_tiles(self, image: torch.Tensor) -> bool:
        return self.tile is not None and max(image.shape[0], image.shape[1]) > self.tile

    def _run_model(self, images: list[torch.Tensor], crops: bool) -> list[dict[str, np.ndarray]]:
        inputs = [im.to(self.device, non_blocking=True).permute(2, 0, 1).float().div_(255.0) for im in images]
        outputs = self._forward(inputs)
        return [self._filter(o, im.shape[:2], crops) for o, im in zip(outputs, images, strict=True)]

    def _forward(self, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The model call, under torch.autocast at `precision` (the model keeps box coordinates float32)."""
        if self.autocast_dtype is None:
            return self.net(inputs)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.net(inputs)

    def _filter(self, o: dict, image_size: tuple[int, int], crops: bool) -> dict[str, np.ndarray]:
        keep = o["scores"] >= self.score
        if self.keep_labels is not None:
            wanted = torch.tensor(sorted(self.keep_labels), device=o["labels"].device)
            keep &= torch.isin(o["labels"], wanted)
        all_kept = bool(keep.all())  # the model already dropped what scores under `score`: usually no copy

        def kept(t: torch.Tensor) -> torch.Tensor:
            return t if all_kept else t[keep]

        boxes = kept(o["boxes"])
        res = {
            "boxes": boxes.float().cpu().numpy().reshape(-1, 4),
            "scores": kept(o["scores"]).float().cpu().numpy(),
            "labels": kept(o["labels"]).to(torch.int64).cpu().numpy(),
            "masks": None,
        }
        if o.get("mask_probs") is not None:
            threshold = getattr(self.net, "mask_threshold", 0.5)
            masks = _cropped_masks(kept(o["mask_probs"]), boxes, image_size, threshold)
            res["masks"] = masks if crops else np.asarray(masks)
        elif o.get("masks") is not None:
            masks = kept(o["masks"])
            if masks.dim() == 4:
                masks = masks[:, 0]
            if masks.dtype != torch.bool:
                masks = masks > 0.5
            res["masks"] = masks.cpu().numpy()
        return res

    def _infer_tiled(self, image: torch.Tensor, tile: int | None = None) -> Detections:
        """Detections of one image [H, W, 3] predicted in overlapping tiles: of side `tile` one per model call
        when given (the out-of-memory fallback), else of side `self.tile`, `self.batch` per call."""
        h, w = image.shape[:2]
        per_call = self.batch if tile is None else 1
        windows = tile_windows(h, w, tile or self.tile, self.tile_overlap)
        tiles = []
        for start in range(0, len(windows), per_call):
            crops = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows[start : start + per_call]]
            tiles.extend(self._run_model(crops, crops=True))
        merged = merge_tiles(tiles, windows, h, w)
        masks = merged.pop("masks", None)
        if masks is not None and not self.mask_crops:
            masks = np.asarray(masks)
        return Detections(width=w, height=h, masks=masks, **merged)


def _cropped_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size, threshold: float) -> CroppedMasks:
    """Mask probabilities [N, 1, M, M] in the frame of `boxes` [N, 4] (image pixels) -> the pasted,
    thresholded masks as box-sized crops on the CPU (one copy per chunk of similar box sizes, not one per
    instance)."""
    from mrseg.model.postprocess import paste_mask_crops

    height, width = int(image_size[0]), int(image_size[1])
    crops: list = [None] * probs.shape[0]
    origins = np.zeros((probs.shape[0], 2), np.int64)
    for chunk in paste_mask_crops(probs, boxes, (height, width), threshold=threshold):
        index, windows = chunk.index.cpu().numpy(), chunk.crops.cpu().numpy()
        corners, sizes = chunk.origins.cpu().numpy(), chunk.sizes.cpu().numpy()
        for k, i in enumerate(index):
            crops[i] = windows[k, : sizes[k, 1], : sizes[k, 0]]
            origins[i] = corners[k]
    return CroppedMasks.from_crops(crops, origins, height, width)


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


def _list_items(sources: Sequence[str], vid_stride: int, stdin, out_dir: Path | None) -> list[InputItem]:
    from mrseg.data.sources import collect_items

    exclude = [out_dir] if out_dir is not None else []
    return collect_items(list(sources), vid_stride=vid_stride, stdin=stdin, exclude=exclude)


def _units(items: list[InputItem]) -> list[list[InputItem]]:
    """Consecutive frames of one video form one unit; every image is a unit of its own."""
    units: list[list[InputItem]] = []
    for it in items:
        if it.frame is not None and units and units[-1][0].frame is not None and units[-1][0].path == it.path:
            units[-1].append(it)
        else:
            units.append([it])
    return units


def _segments(units: list[list[InputItem]]):
    """Runs of image units merged into one list (one DataLoader), each video on its own: (is_video, items)."""
    images: list[InputItem] = []
    for unit in units:
        if unit[0].frame is None:
            images.extend(unit)
            continue
        if images:
            yield False, images
            images = []
        yield True, unit
    if images:
        yield False, images


def _seed_tracker(tracker: Tracker, state: journal.ResumeState, video: str | None) -> None:
    """Continue a video's tracks from its last journaled frame; new ids above any it already used."""
    tracker.next_id = max(tracker.next_id, state.max_track_ids.get(video, 0) + 1)
    last = state.last_frames.get(video)
    if not last or not last["instances"]:
        return
    inst = [r for r in last["instances"] if r.get("track_id") is not None]
    if not inst:
        return
    boxes = np.array(
        [
            [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
            for r in inst
        ],
        np.float32,
    )
    tracker.seed(boxes, np.array([r["label"] for r in inst]), np.array([r["track_id"] for r in inst]))


class _Sink:
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
        from mrseg.outputs import JsonlWriter, LabelmeWriter, OverlayWriter, YoloWriter, instance_records
        from mrseg.outputs.records import record_line

        self._records, self._line = instance_records, record_line
        self.classes = classes
        # Instance records always carry the exact RLE; polygons only when annotations.json is to hold them.
        coco_polygons = mask_format == "polygon" and "coco" in formats and not stream
        self.mask_format = "polygon" if coco_polygons else "rle"
        self.simplify = simplify
        self.progress = progress
        self.quiet = quiet
        self.item_writers = []
        if stream:
            self.item_writers.append(JsonlWriter(sys.stdout))
        else:
            make = {
                "labelme": lambda: LabelmeWriter(out_dir, simplify=simplify),
                "yolo": lambda: YoloWriter(out_dir, simplify=simplify, classes=classes),
                "overlay": lambda: OverlayWriter(out_dir, vid_stride=vid_stride),
            }
            # The overlay last: a frame drawn into a video can't be taken back when a later writer fails.
            self.item_writers += [make[f]() for f in sorted(formats, key="overlay".__eq__) if f in make]
        self.journal = None if stream else journal.AppendLog(journal.records_path(out_dir, rank))
        self.failure_log = None if stream else journal.AppendLog(journal.failures_path(out_dir, rank))
        self.processed = 0
        self.instances = 0
        self.failures: list[dict] = []
        self.failed = 0

    def __call__(self, job) -> None:
        kind, item, payload, det = job
        if kind == "fail":
            self._failure(item, payload)
            return
        if kind == "end":
            self._end_video(item)
            return
        try:
            instances = self._records(det, self.classes, mask_format=self.mask_format, simplify=self.simplify)
            for writer in self.item_writers:
                writer.write(item, payload, det, instances)
        except Exception as e:  # noqa: BLE001 - this input fails, the run goes on (unless every input would)
            if _is_fatal_write_error(e, self.journal is None):
                raise
            self._discard(item)
            self._failure(item, f"writing its outputs failed: {type(e).__name__}: {e}")
            return
        if self.journal is not None:  # last: a journal line means every file of this input is in place
            self.journal.append_line(self._line(item, det, instances))
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
        for writer in self.item_writers:
            end = getattr(writer, "end_video", None)
            if end is None:
                continue
            try:
                end(item)
            except Exception as e:  # noqa: BLE001 - reported; resume redoes the frames
                if _is_fatal_write_error(e, self.journal is None):
                    raise
                self.progress.print(f"warning: the overlay video of {item.path} could not be written: {e}")

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
            self.progress.print(f"warning: skipped {describe_failure(rec)}")
        self.progress.advance(failed=True)

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


def parse_formats(formats: Sequence[str] | str | None, stream: bool) -> list[str]:
    """The `--format` list, checked; default coco (jsonl when streaming to stdout)."""
    if formats is None:
        formats = ["jsonl"] if stream else ["coco"]
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise PredictError(f"--format {','.join(unknown) or '(empty)'}: choose from {','.join(FORMATS)}")
    if stream and formats != ["jsonl"]:
        raise PredictError("--out - streams jsonl to stdout; other formats need an output folder (--out DIR)")
    return list(dict.fromkeys(formats))


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
    predictor: Predictor | None = None,
    stdin=None,
) -> PredictSummary:
    """Predict every input of `sources` and write the outputs to `out` (`-`: jsonl lines on stdout).

    The options are the CLI's (see `mrseg predict --help`); `predictor` replaces weights/arch/device/score/
    classes/tile/batch/max_pixels/precision with an existing `Predictor`, `stdin` is read for a `-` source.
    Under torchrun each rank takes every world-th input (a video as one input) and rank 0 writes the final
    files once all are done. Returns the summary; raises `PredictInterrupted` on Ctrl-C after flushing and
    journaling what was done, `PredictError` / `ValueError` for bad options, sources or weights.
    """
    started = time.monotonic()
    stream = str(out) == "-"
    formats = parse_formats(formats, stream)
    if mask_format not in ("polygon", "rle"):
        raise PredictError(f"--mask-format {mask_format}: choose polygon or rle")
    if vid_stride < 1:
        raise PredictError(f"--vid-stride must be >= 1, got {vid_stride}")
    if stream and resume:
        raise PredictError("--resume needs an output folder; it can't resume a stream to stdout (--out -)")
    if workers < 0:
        raise PredictError(f"--workers must be >= 0, got {workers}")

    shard = init_shard()
    lock: RunLock | None = None
    try:
        if stream and shard.world > 1:
            raise PredictError("--out - (stdout) works in one process only; under torchrun give --out DIR")

        # Rank 0 decides the folder, locks it for the whole run (one lock for all ranks) and lists the inputs
        # (before the slow model load, so bad sources fail fast); every rank gets the same list, hence ids.
        def start():
            nonlocal lock
            folder = None if stream else resolve_out_dir(out, exist_ok=exist_ok, resume=resume)
            if folder is not None:
                lock = RunLock.acquire(folder)
                if lock.note and not quiet:
                    print(lock.note, file=sys.stderr)
            return folder, _list_items(sources, vid_stride, stdin, folder), lock and lock.token()

        out_dir, items, token = shard.on_main(start)
        if shard.world > 1 and not stream:  # the other ranks must see rank 0's lock: a shared --out
            # (not rank 0: reading the file through a new descriptor would drop its POSIX lock)
            mine = None if shard.is_main else check_same_lock(out_dir, token)
            problems = [p for p in shard.gather(mine) if p]
            if problems:
                raise PredictError(problems[0])
        notes: list[str] = []
        if predictor is None:
            dev = resolve_device(device, shard.local_rank, notes=notes,
                                 needs_kernels=not str(weights).lower().endswith(".onnx"))  # fmt: skip
            predictor = Predictor(
                weights, arch=arch, device=dev, score=score,
                classes=classes, tile=tile, tile_overlap=tile_overlap, batch=batch, max_pixels=max_pixels,
                precision=precision, mask_crops=True,
            )  # fmt: skip
        if shard.is_main and not quiet:  # once, at start: what runs the model
            for line in [*notes, device_note(predictor)]:
                print(line, file=sys.stderr)
        state = journal.ResumeState()
        if not stream:
            meta = {"sources": [str(s) for s in sources], "vid_stride": vid_stride, "formats": formats,
                    "world_size": shard.world, "weights": str(weights), "num_items": len(items),
                    "precision": predictor.precision}  # fmt: skip
            if shard.is_main:
                _open_run_folder(out_dir, meta, resume, items)
            out_dir = Path(shard.broadcast(str(out_dir) if out_dir else None))
            shard.barrier()
            if resume:
                state = journal.read_state(out_dir)
                if "overlay" in formats:  # frames whose overlay video segment a crash lost are done again
                    lost = _lost_overlay_frames(items, state, out_dir)
                    if lost:
                        state = journal.read_state(out_dir, exclude=lost)
        skip = state.done_ids  # inputs that failed are tried again: the cause may have been fixed since
        summary = PredictSummary(out_dir=out_dir, total=len(items), rank=shard.rank,
                                 skipped=len(skip & {it.id for it in items}))  # fmt: skip

        todo_units = []
        for unit in units_for_rank(_units(items), shard):
            left = [it for it in unit if it.id not in skip]
            if left:
                todo_units.append(left)
        show = shard.is_main and not (quiet or stream)
        progress = RunProgress(total=sum(map(len, todo_units)), enabled=show)
        sink = _Sink(
            out_dir=out_dir, rank=shard.rank, formats=formats, classes=predictor.classes,
            mask_format=mask_format, simplify=simplify, vid_stride=vid_stride, stream=stream, quiet=quiet,
            progress=progress,
        )  # fmt: skip
        interrupted = _process(todo_units, predictor, sink, state, batch=batch or predictor.batch,
                               workers=workers, vid_stride=vid_stride, max_pixels=max_pixels,
                               keep_image="overlay" in formats)  # fmt: skip
        local = {"processed": sink.processed, "instances": sink.instances, "failed": sink.failed,
                 "failures": sink.failures}  # fmt: skip
        if interrupted:
            summary.processed, summary.instances, summary.failed = (
                local[k] for k in ("processed", "instances", "failed")
            )
            summary.failures, summary.interrupted = local["failures"], True
            summary.seconds = time.monotonic() - started
            raise PredictInterrupted(summary)

        shard.barrier()
        parts = shard.gather(local)
        failed_total = incomplete = None
        if shard.is_main and not stream and shard.world > 1:  # each rank's journal reached rank 0's disk?
            left, seen = journal.unaccounted(out_dir, [it.id for it in items])
            incomplete = missing_parts(left, parts, seen, out_dir)
        incomplete = shard.broadcast(incomplete)
        if incomplete:
            raise PredictError(incomplete)
        if shard.is_main and not stream:
            from mrseg.outputs import finalize

            finalize(out_dir, formats, journal.all_records_paths(out_dir), predictor.classes)
            failed_total = journal.merge_failures(out_dir)
        failed_total = shard.broadcast(failed_total)
        summary.processed = sum(p["processed"] for p in parts)
        summary.instances = sum(p["instances"] for p in parts)
        summary.failed = failed_total if failed_total is not None else sum(p["failed"] for p in parts)
        summary.failures = [f for p in parts for f in p["failures"]][:20]
        if summary.failed and not summary.failures and out_dir is not None:  # all failed in an earlier run
            summary.failures = list(journal.iter_lines(out_dir / "failures.jsonl"))[:20]
        summary.seconds = time.monotonic() - started
        shard.barrier()  # nobody exits (which makes torchrun stop the others) before every rank is done
        return summary
    finally:
        if lock is not None:
            lock.release()
        shard.close()


def _lost_overlay_frames(items: list[InputItem], state: journal.ResumeState, out_dir: Path) -> set[int]:
    """Ids of journaled video frames that no complete overlay segment holds (the run writing them was killed
    before its segment was finished). A video whose segment folder is gone was assembled by a finished run."""
    from mrseg.outputs.overlay import OverlayWriter
    from mrseg.outputs.video_segments import committed_segments, parts_dir

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


def _open_run_folder(out_dir: Path, meta: dict, resume: bool, items: list[InputItem]) -> None:
    start_state(out_dir, meta, resume=resume, items=items)
    if resume:
        for path in journal.all_records_paths(out_dir) + journal.all_failures_paths(out_dir):
            journal.repair(path)


def _process(
    todo_units,
    predictor: Predictor,
    sink: _Sink,
    state: journal.ResumeState,
    *,
    batch: int,
    workers: int,
    vid_stride: int,
    max_pixels: int | None,
    keep_image: bool,
) -> bool:
    """Decode, predict and hand every unit to the writer thread. Returns True when stopped by Ctrl-C."""
    pin = predictor.device.type == "cuda"
    # Each queued input holds its full-size masks: keep the queue short (a big photo can hold 100s of MB).
    writer = WriterThread(sink, maxsize=max(2, batch))
    interrupted = False
    with sink.progress:  # stays up until the writer has finished the last input
        try:
            for is_video, seg in _segments(todo_units):
                tracker = None
                if is_video:
                    tracker = Tracker()
                    _seed_tracker(tracker, state, seg[0].video)
                    loader = video_loader(seg, batch=batch, workers=workers, pin=pin, vid_stride=vid_stride)
                else:
                    loader = image_loader(seg, batch=batch, workers=workers, pin=pin, max_pixels=max_pixels)
                for loaded in loader:
                    _dispatch(loaded, predictor, tracker, writer, keep_image)
                if is_video:  # its overlay is committed now, not at the end of the run
                    writer.put(("end", seg[-1], None, None))
        except KeyboardInterrupt:
            interrupted = True  # what was predicted is still written and journaled below
        finally:
            try:
                writer.close()
            finally:
                sink.close()
    return interrupted


def _dispatch(
    loaded: list[Loaded],
    predictor: Predictor,
    tracker: Tracker | None,
    writer: WriterThread,
    keep_image: bool,
) -> None:
    good = [x for x in loaded if x.error is None]
    try:
        dets = predictor.infer([x.image for x in good]) if good else []
    except InferenceOutOfMemory as e:  # some images ran out of memory every way: they fail, the rest go on
        if e.results is None:
            raise
        dets = e.results  # Detections, or why (str)
    by_id = {id(x): d for x, d in zip(good, dets, strict=True)}
    for x in loaded:  # in input order: the journal stays sorted by id
        det = by_id.get(id(x), x.error)
        if isinstance(det, str):
            writer.put(("fail", x.item, det, None))
            continue
        if tracker is not None:
            det.track_ids = tracker.update(det.boxes, det.labels, det.masks)
        writer.put(("ok", x.item, x.image.numpy() if keep_image else None, det))
