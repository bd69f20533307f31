"""Input transform: normalise, resize (short side / long side limits), pad-and-batch to a multiple of 32.

Numerics follow torchvision's GeneralizedRCNNTransform exactly (normalise first, then bilinear
`F.interpolate(scale_factor=s, recompute_scale_factor=True)`), so torchvision's weights see the same pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrseg.model.postprocess import scale_boxes, scale_keypoints

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_args(height: int, width: int, scale: float) -> dict:
    """`F.interpolate` arguments scaling an image by `scale` as torchvision does (output side = floor(side x
    scale)), except that a side that would round to 0 px (a 5000x30 strip fitted into max_size 128) keeps
    1 px: torchvision raises there, which would fail the whole batch the image is in."""
    if math.floor(height * scale) >= 1 and math.floor(width * scale) >= 1:
        return {"scale_factor": scale, "recompute_scale_factor": True}
    return {"size": (max(1, math.floor(height * scale)), max(1, math.floor(width * scale)))}


class ImageTransform(nn.Module):
    """images: list of float [3, H_i, W_i] in 0..1 -> (batch [N, 3, H, W] padded with zeros to multiples of
    `size_divisible`, image_sizes [(h_i, w_i)] after resizing, targets with boxes, masks, keypoints resized).

    `min_size` may be a tuple: in training one is drawn per image (multi-scale training); in eval the last
    is used.
    """

    def __init__(
        self,
        *,
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        size_divisible: int = 32,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (tuple, list)) else (min_size,)
        self.max_size = max_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.size_divisible = size_divisible

    def scale_factor(self, height: int, width: int, min_size: int) -> float:
        return min(min_size / min(height, width), self.max_size / max(height, width))

    def _pick_min_size(self) -> int:
        if not self.training or len(self.min_size) == 1:
            return self.min_size[-1]
        return self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        out_images, out_targets = [], []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"images[{i}]: expected a float tensor [3, H, W], got shape {tuple(image.shape)}"
                )
            if not image.is_floating_point():
                raise TypeError(f"images[{i}]: expected a float tensor in 0..1, got dtype {image.dtype}")
            mean = torch.as_tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
            std = torch.as_tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
            image = (image - mean) / std
            h, w = image.shape[-2:]
            scale = self.scale_factor(h, w, self._pick_min_size())
            resize = resize_args(h, w, scale)
            image = F.interpolate(image[None], mode="bilinear", align_corners=False, **resize)[0]
            out_images.append(image)
            if targets is not None:
                target = dict(targets[i])
                resized = tuple(image.shape[-2:])
                target["boxes"] = scale_boxes(target["boxes"], (h, w), resized)
                if "keypoints" in target:
                    target["keypoints"] = scale_keypoints(target["keypoints"], (h, w), resized)
                if "masks" in target:
                    masks = target["masks"][:, None].float()
                    masks = F.interpolate(masks, **resize)
                    target["masks"] = masks[:, 0].byte()
                out_targets.append(target)
        image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in out_images]
        return self.batch(out_images), image_sizes, (out_targets if targets is not None else None)

    def batch(self, images: list[Tensor]) -> Tensor:
        """Pads [3, h_i, w_i] images with zeros (bottom/right) into one [N, 3, H, W] with H, W multiples of
        size_divisible."""
        stride = float(self.size_divisible)
        height = int(math.ceil(max(img.shape[-2] for img in images) / stride) * stride)
        width = int(math.ceil(max(img.shape[-1] for img in images) / stride) * stride)
        return torch.stack(
            [F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2])) for img in images]
        )
