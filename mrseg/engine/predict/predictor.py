"""`Predictor`: one model, images in, `Detections` out — for one image, a list, or a stream of inputs
(`engine.predict.stream`), which `mrseg predict` drains into its output folder (`engine.predict.run`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from mrseg.engine.device import resolve_device
from mrseg.engine.predict.model_output import detection_arrays
from mrseg.engine.predict.oom import InferenceOutOfMemory, infer_with_fallback
from mrseg.engine.predict.options import PredictError, autocast_dtype, load_weights, resolve_class_filter
from mrseg.engine.predict.options import device_note as device_note  # re-exported
from mrseg.engine.predict.stream import Failure, TrackerSeed, stream_predictions
from mrseg.engine.predict.tiling import merge_tiles, tile_windows
from mrseg.outputs.detections import Detections, InputItem


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
            float rounding. `self.model` stays the model as given; the copy is made once, here. False runs
            the model as given: in fp32 on the CPU, bit-identical to torchvision's with the same weights.
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
        if not 0.0 <= score <= 1.0:
            raise PredictError(f"--score must be in [0, 1], got {score}")
        if model is None:
            if weights is None:
                raise PredictError("Predictor needs weights= (a zoo name or a file) or model=")
            # Detections scoring under `score` are dropped before the mask head and the paste, not after (NMS
            # only lets a box suppress lower-scoring ones, so the kept set is the same); masks come back as
            # probabilities in their boxes and are pasted by `detection_arrays`, into box-sized crops.
            from mrseg.model.zoo import DEFAULT_BOX_SCORE_THRESH  # `score` never goes below the head's own

            threshold = max(DEFAULT_BOX_SCORE_THRESH, score)
            model, info = load_weights(
                weights, arch, self.device, box_score_thresh=threshold, paste_masks=False
            )
            model_classes = info.classes
        if model_classes is None:
            raise PredictError("Predictor(model=...) also needs model_classes=[{'id':..,'name':..}, ...]")
        if tile is not None:
            tile_windows(tile, tile, tile, tile_overlap)  # validates both
        self.model = model.eval().to(self.device) if isinstance(model, torch.nn.Module) else model
        from mrseg.model.maskrcnn import MaskRCNN

        self.net = self.model  # what runs: the model, or its fused inference copy
        if fuse and isinstance(self.model, MaskRCNN):
            from mrseg.model.fuse import fuse_for_inference

            self.net = fuse_for_inference(self.model)
        self.classes = list(model_classes)
        self.score = float(score)
        self.keep_labels = resolve_class_filter(classes, self.classes)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.batch = batch or (4 if self.device.type == "cuda" else 1)
        self.max_pixels = max_pixels
        self.mask_crops = mask_crops
        if self.autocast_dtype is not None and not isinstance(self.model, MaskRCNN):
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

    def stream(
        self,
        sources: Sequence[str | Path] | Sequence[InputItem],
        *,
        vid_stride: int = 1,
        workers: int = 2,
        batch: int | None = None,
        max_pixels: int | None = None,
        keep_images: bool | str = False,
        seed_tracker: TrackerSeed | None = None,
        on_video_end: Callable[[InputItem], None] | None = None,
    ) -> Iterator[tuple[InputItem, Detections | Failure]]:
        """`(item, Detections | Failure)` for every input of `sources`, in input order, as each is done.

        sources: what `mrseg predict` takes (image files, folders, globs, `.txt` lists, videos: every
            `vid_stride`-th frame), or `InputItem`s already listed. Files are decoded by `workers`
            DataLoader workers and predicted `batch` at a time (default: the Predictor's); video frames get
            `track_ids`.
        keep_images: also return each decoded image as `Detections.image` (uint8 RGB [H, W, 3]); "frames":
            only those of video frames (which have no file to link or point to).
        seed_tracker: `(tracker, video)` called before a video's first frame (continue its tracks).
        on_video_end: `(last item)` called once a video's last frame has been yielded, before the next input.
        A bad input (unreadable, a missing frame, out of memory alone and in tiles) is a `Failure(reason)`,
        never an exception; bad sources (nothing found, a missing file named) raise ValueError at once.
        """
        items = list(sources)
        if not all(isinstance(it, InputItem) for it in items):
            from mrseg.data.sources import collect_items

            items = collect_items([str(s) for s in items], vid_stride=vid_stride)
        return stream_predictions(
            self,
            items,
            batch=batch or self.batch,
            workers=workers,
            vid_stride=vid_stride,
            max_pixels=self.max_pixels if max_pixels is None else max_pixels,
            keep_images=keep_images,
            seed_tracker=seed_tracker,
            on_video_end=on_video_end,
        )

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
        """Detections for uint8 [H, W, 3] tensors (CPU, pinned when the model is on a GPU), with the
        out-of-memory fallbacks of `engine.predict.oom`; `InferenceOutOfMemory` when they fail."""
        out = infer_with_fallback(images, self._infer_whole, self._infer_tiled, self.device, self.tile)
        failed = [r for r in out if isinstance(r, str)]
        if failed:
            raise InferenceOutOfMemory(failed[0], results=out)
        return out

    def _infer_whole(self, images: list[torch.Tensor]) -> list[Detections]:
        out: list[Detections | None] = [None] * len(images)
        whole = [i for i, im in enumerate(images) if self.tile is None or max(im.shape[:2]) <= self.tile]
        if whole:
            results = self._run_model([images[i] for i in whole], self.mask_crops)
            for i, res in zip(whole, results, strict=True):
                h, w = images[i].shape[:2]
                out[i] = Detections(width=w, height=h, **res)
        return [o if o is not None else self._infer_tiled(im) for o, im in zip(out, images, strict=True)]

    def _run_model(self, images: list[torch.Tensor], crops: bool) -> list[dict[str, np.ndarray]]:
        inputs = [im.to(self.device, non_blocking=True).permute(2, 0, 1).float().div_(255.0) for im in images]
        outputs = self._forward(inputs)
        threshold = getattr(self.net, "mask_threshold", 0.5)
        return [
            detection_arrays(
                o,
                im.shape[:2],
                score=self.score,
                keep_labels=self.keep_labels,
                mask_threshold=threshold,
                crops=crops,
            )
            for o, im in zip(outputs, images, strict=True)
        ]

    def _forward(self, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The model call, under torch.autocast at `precision` (the model keeps box coordinates float32)."""
        if self.autocast_dtype is None:
            return self.net(inputs)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.net(inputs)

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
