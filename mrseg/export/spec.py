"""What an exported graph expects and how to turn its outputs into detections; stored inside the file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "mrseg"  # ONNX metadata_props key / TorchScript extra file "mrseg.json"
INPUT_NAMES = ("images", "image_sizes")


def output_names(heads: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The graph outputs of a model with these heads beyond boxes, in order."""
    return (
        ("boxes", "scores", "labels")
        + (("mask_probs",) if "mask" in heads else ())
        + (("keypoint_heatmaps",) if "keypoint" in heads else ())
        + ("image_index",)
    )


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@dataclass
class GraphSpec:
    """The contract of an exported Mask R-CNN graph.

    Inputs: `images` float32 [batch, 3, H, W]: RGB in 0..1 resized by `resize_scale`, normalized with
    `mean`/`std` and zero-padded bottom/right to a multiple of `size_divisible` (exactly what the model's own
    transform feeds its backbone; H and W are dynamic, `height` x `width` is only the size it was traced at);
    `image_sizes` float32 [batch, 2]: (h, w) of each resized image in the canvas (boxes are clipped to it).
    Outputs (`output_names`: by `heads`, the model's heads beyond boxes), concatenated over the batch:
    `boxes` float32 [D, 4] xyxy in resized-image pixels, `scores` [D], `labels` int64 [D] (1..K,
    `classes[label - 1]`), with a mask head `mask_probs` float32 [D, 1, 28, 28] (the predicted class's mask
    in the frame of its box), with a keypoint head `keypoint_heatmaps` float32 [D, K, 56, 56] (logits over
    each box), `image_index` int64 [D] (which image of the batch).
    The post-step scales boxes by 1 / scale, pastes each mask into its box (`mrseg.model.postprocess`) and
    decodes keypoints from the heatmaps as the model does (`heatmaps_to_keypoints` on the resized-image box,
    then scaled).
    """

    height: int
    width: int
    batch: int
    min_size: int
    max_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_threshold: float = 0.5
    arch: str = ""
    classes: list[dict] = field(default_factory=list)
    size_divisible: int = 32
    heads: list[str] = field(default_factory=lambda: ["mask"])  # files from before heads were Mask R-CNNs
    # 1: a fixed canvas (batches padded to height x width, larger images shrunk to fit); 2: any size
    format_version: int = 2

    @property
    def output_names(self) -> tuple[str, ...]:
        return output_names(self.heads)

    @property
    def dynamic(self) -> bool:
        return self.format_version >= 2

    def resize_scale(self, height: int, width: int) -> float:
        """The model's resize rule (short side to min_size, long side at most max_size); a format-1 file
        also caps it so that the resized image fits its fixed canvas."""
        scale = min(self.min_size / min(height, width), self.max_size / max(height, width))
        return scale if self.dynamic else min(scale, self.height / height, self.width / width)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GraphSpec:
        data = json.loads(text)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        data.setdefault("format_version", 1)  # files written before the field existed had a fixed canvas
        return cls(**data)
