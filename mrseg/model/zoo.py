"""Named architectures and weights: build a Mask R-CNN (or Keypoint / Faster R-CNN) by name, load
torchvision's or mrseg's weights into it.

Arch names are a backbone layout from `ARCHS` plus a suffix naming the RoI heads beyond boxes
(`HEAD_SUFFIXES`):
`r50-fpn` (mask, Mask R-CNN), `r50-fpn-kp` (keypoints, Keypoint R-CNN), `r50-fpn-mask-kp` (both),
`r50-fpn-box` (boxes only, Faster R-CNN); likewise for every layout (`r50-fpn-v2-box`, `r18-fpn-kp`, ...).

Weights come from torchvision's URLs (its weight enums) and are downloaded once into the torch hub cache
(`$TORCH_HOME/hub/checkpoints`); every file is read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import zipfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.hub import download_url_to_file
from torchvision.ops import FrozenBatchNorm2d

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from mrseg.model.anchors import AnchorGenerator
from mrseg.model.backbone import build_resnet_fpn, frozen_bn, norm_factory
from mrseg.model.box_coder import BoxCoder
from mrseg.model.checkpoint_format import (
    DEFAULT_ANCHOR_SIZES,
    CheckpointFormatError,
    is_checkpoint,
    read_checkpoint,
)
from mrseg.model.coco_classes import coco_label_classes, coco_person_classes
from mrseg.model.convert import is_torchvision_state_dict, resnet_to_mrseg, torchvision_to_mrseg
from mrseg.model.keypoint_head import KeypointHead
from mrseg.model.maskrcnn import MaskRCNN
from mrseg.model.matcher import Matcher
from mrseg.model.poolers import MultiScaleRoIAlign
from mrseg.model.roi_heads import BoxHead, BoxPredictor, MaskHead, RoIHeads
from mrseg.model.rpn import RPN, RPNHead
from mrseg.model.sampler import BalancedSampler
from mrseg.model.transform import ImageTransform


class WeightsError(ValueError):
    """Weights could not be found, fetched or loaded; the message says which file and what to do."""


@dataclass(frozen=True)
class ArchSpec:
    """depth: ResNet depth; v2: torchvision's maskrcnn_resnet50_fpn_v2 layout (BN in FPN and heads, 2-conv RPN
    head, 4conv+1fc box head; like torchvision, its ResNet uses plain BatchNorm2d, which updates its
    statistics in train mode, where v1 uses FrozenBatchNorm2d); aligned: the RoIAlign flavour of the poolers
    (see mrseg.model.poolers)."""

    depth: int
    v2: bool = False
    aligned: bool = True


ARCHS: dict[str, ArchSpec] = {
    "r18-fpn": ArchSpec(18),
    "r34-fpn": ArchSpec(34),
    "r50-fpn": ArchSpec(50, aligned=False),
    "r101-fpn": ArchSpec(101),
    "r50-fpn-v2": ArchSpec(50, v2=True, aligned=False),
}

# arch name = an ARCHS layout + one of these suffixes, naming the heads beyond the box head
HEAD_SUFFIXES: dict[str, tuple[str, ...]] = {
    "": ("mask",),
    "-box": (),
    "-kp": ("keypoint",),
    "-mask-kp": ("mask", "keypoint"),
}
ARCH_NAMES: tuple[str, ...] = tuple(base + suffix for suffix in HEAD_SUFFIXES for base in ARCHS)
"""Every name `build_model` and `--arch` take."""

# torchvision's KeypointRCNN trains at a short side drawn from these (min_size's default there); eval uses 800
KEYPOINT_TRAIN_MIN_SIZES = (640, 672, 704, 736, 768, 800)
DEFAULT_BOX_SCORE_THRESH = 0.05  # the box head's own score threshold (the paper's, torchvision's)


def split_arch(arch: str) -> tuple[str, tuple[str, ...]]:
    """An arch name -> (its ARCHS layout, its heads beyond boxes): "r50-fpn-kp" -> ("r50-fpn", ("keypoint",)).
    Raises ValueError listing the valid names."""
    for suffix, heads in sorted(HEAD_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        base = arch[: len(arch) - len(suffix)] if suffix else arch
        if arch.endswith(suffix) and base in ARCHS:
            return base, heads
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCH_NAMES)}")


def arch_name(base: str, heads: tuple[str, ...] | list[str]) -> str:
    """The arch name of an ARCHS layout with these heads (the inverse of `split_arch`)."""
    for suffix, suffix_heads in HEAD_SUFFIXES.items():
        if set(suffix_heads) == set(heads):
            return base + suffix
    raise ValueError(f"no arch has the heads {list(heads)}; heads are a subset of ['mask', 'keypoint']")


@dataclass(frozen=True)
class WeightSpec:
    """url: torchvision's file; arch: the model it fits; frozen_bn_eps: the eps its FrozenBatchNorm2d layers
    need (torchvision sets 0 after loading the files trained before its eps fix, pytorch/vision#2933);
    person_keypoints: a 2-class (background, person) COCO keypoint model, else COCO's 91 labels;
    min_size: the transform's short side(s), as torchvision's builder of that model sets them."""

    url: str
    arch: str
    frozen_bn_eps: float = 1e-5
    person_keypoints: bool = False
    min_size: int | tuple[int, ...] = 800


_TV = "https://download.pytorch.org/models/"  # where torchvision's weight files are

WEIGHTS: dict[str, WeightSpec] = {
    # torchvision MaskRCNN_ResNet50_FPN_Weights.COCO_V1 (trained with eps-free FrozenBatchNorm: eps 0)
    "coco-r50-fpn": WeightSpec(_TV + "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", "r50-fpn", 0.0),
    # torchvision MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    "coco-r50-fpn-v2": WeightSpec(_TV + "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "r50-fpn-v2"),
    # torchvision KeypointRCNN_ResNet50_FPN_Weights.COCO_V1 (54.6 box AP, 65.0 keypoint AP; eps 0 as above)
    "coco-kp-r50-fpn": WeightSpec(
        _TV + "keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        "r50-fpn-kp",
        0.0,
        person_keypoints=True,
        min_size=KEYPOINT_TRAIN_MIN_SIZES,
    ),
    # torchvision KeypointRCNN_ResNet50_FPN_Weights.COCO_LEGACY (50.6 / 61.1); torchvision leaves its eps at
    # 1e-5 (keypointrcnn_resnet50_fpn overwrites eps only for COCO_V1)
    "coco-kp-r50-fpn-legacy": WeightSpec(
        _TV + "keypointrcnn_resnet50_fpn_coco-9f466800.pth",
        "r50-fpn-kp",
        person_keypoints=True,
        min_size=KEYPOINT_TRAIN_MIN_SIZES,
    ),
    # torchvision FasterRCNN_ResNet50_FPN_Weights.COCO_V1 (37.0 box AP; eps 0)
    "coco-frcnn-r50-fpn": WeightSpec(_TV + "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", "r50-fpn-box", 0.0),
    # torchvision FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1 (46.7 box AP; BatchNorm2d, no eps quirk)
    "coco-frcnn-r50-fpn-v2": WeightSpec(
        _TV + "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", "r50-fpn-v2-box"
    ),
}

# torchvision ResNet{18,34,50,101}_Weights.IMAGENET1K_V1 (the backbones torchvision's detectors start from)
IMAGENET_URLS: dict[int, str] = {
    18: _TV + "resnet18-f37072fd.pth",
    34: _TV + "resnet34-b627a593.pth",
    50: _TV + "resnet50-0676ba61.pth",
    101: _TV + "resnet101-63fe2227.pth",
}


@dataclass
class ModelInfo:
    """arch: an ARCH_NAMES name; classes: `{"id": category_id, "name": name}` for labels 1..K
    (`classes[label - 1]`; a keypoint model's categories also carry COCO's `keypoints` names and `skeleton`);
    source: the zoo name or file the weights came from."""

    arch: str
    classes: list[dict] = field(default_factory=list)
    source: str = ""

    @property
    def heads(self) -> tuple[str, ...]:
        """The model's heads beyond boxes: (), ("mask",), ("keypoint",) or ("mask", "keypoint")."""
        return split_arch(self.arch)[1]


def build_model(
    arch: str,
    num_classes: int,
    *,
    min_size: int | tuple[int, ...] | None = None,
    max_size: int = 1333,
    num_keypoints: int = 17,
    frozen_bn_eps: float = 1e-5,
    freeze_at: int = 2,
    aligned: bool | None = None,
    norm: str | None = None,
    anchor_sizes: tuple[int, ...] = DEFAULT_ANCHOR_SIZES,
    channels: int = 256,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    box_score_thresh: float = DEFAULT_BOX_SCORE_THRESH,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    paste_masks: bool = True,
) -> MaskRCNN:
    """A Mask R-CNN (Keypoint R-CNN, Faster R-CNN: see the module doc for the arch names) with random heads.

    num_classes: K, the number of object classes WITHOUT background (the heads predict K + 1; torchvision's
    COCO models have K = 90, labels 1..90 = COCO category ids). min_size / max_size: resize limits of the
    input transform; min_size None = 800, or torchvision's KeypointRCNN default (640, ..., 800: one drawn per
    image in training, 800 in eval) for a model with a keypoint head. num_keypoints: keypoint heatmaps (17 =
    COCO). aligned: override the arch's RoIAlign flavour.
    norm: the backbone's normalisation (see mrseg.model.backbone.NORMS): None = the arch's own (frozen BN for
    v1, BN for v2; what pretrained weights need); "bn" (BatchNorm2d with batch statistics) or "gn"
    (GroupNorm(32)) put that norm in the ResNet and the FPN, for training from scratch, where frozen BN leaves
    the network un-normalised. anchor_sizes: one anchor size in pixels per FPN level P2..P6 (smaller for small
    images). channels: the width of the FPN outputs and of the mask head's convs, and half the keypoint head's
    (256 and 512 in the paper; narrower is much cheaper for a small model trained from scratch).
    rpn_{pre,post}_nms_top_n_{train,test}: proposals kept per image (per FPN level before NMS, in all after
    it) in train / eval mode; rpn_nms_thresh: the proposals' NMS IoU; rpn_batch_size_per_image: anchors
    sampled per image for the RPN loss; box_batch_size_per_image: RoIs sampled per image for the box head in
    training; box_score_thresh / box_nms_thresh / box_detections_per_img: the eval-time score threshold (a
    detection scoring at least this is kept), class-wise NMS IoU and detections kept per image; paste_masks:
    False returns `mask_probs` instead of pasted masks (see MaskRCNN).
    Defaults are the paper's (torchvision's names and values); they change no weight shape, so a checkpoint
    loads whatever they are set to.
    """
    base, heads = split_arch(arch)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (object classes, without background), got {num_classes}")
    if len(anchor_sizes) != 5 or min(anchor_sizes) <= 0:
        raise ValueError(f"anchor_sizes needs 5 positive sizes (P2..P6), got {tuple(anchor_sizes)}")
    if "keypoint" in heads and num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    if min_size is None:
        min_size = KEYPOINT_TRAIN_MIN_SIZES if "keypoint" in heads else 800
    spec = ARCHS[base]
    aligned = spec.aligned if aligned is None else aligned
    bn = nn.BatchNorm2d if spec.v2 else None
    if norm is None:
        backbone_norm, fpn_norm = (nn.BatchNorm2d if spec.v2 else frozen_bn(frozen_bn_eps)), bn
    elif norm == "frozen-bn":
        backbone_norm, fpn_norm = frozen_bn(frozen_bn_eps), bn
    else:
        backbone_norm = fpn_norm = norm_factory(norm)
    backbone = build_resnet_fpn(
        spec.depth, backbone_norm=backbone_norm, fpn_norm=fpn_norm, freeze_at=freeze_at, out_channels=channels
    )
    anchors = AnchorGenerator(sizes=tuple(anchor_sizes), aspect_ratios=(0.5, 1.0, 2.0))
    rpn = RPN(
        anchor_generator=anchors,
        head=RPNHead(
            in_channels=channels, num_anchors=anchors.num_anchors_per_location, num_convs=2 if spec.v2 else 1
        ),
        matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        sampler=BalancedSampler(rpn_batch_size_per_image, 0.5),
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        pre_nms_top_n={"train": rpn_pre_nms_top_n_train, "test": rpn_pre_nms_top_n_test},
        post_nms_top_n={"train": rpn_post_nms_top_n_train, "test": rpn_post_nms_top_n_test},
        nms_thresh=rpn_nms_thresh,
    )
    box_head = BoxHead(
        in_channels=channels,
        pooled_size=7,
        conv_dims=(256, 256, 256, 256) if spec.v2 else (),
        fc_dims=(1024,) if spec.v2 else (1024, 1024),
        norm=bn,
    )
    # built before the optional branches: a seeded model's random weights stay what they were before them
    box_predictor = BoxPredictor(in_features=box_head.out_features, num_classes=num_classes)
    branches = {}
    if "mask" in heads:
        branches["mask_pooler"] = MultiScaleRoIAlign(output_size=14, sampling_ratio=2, aligned=aligned)
        branches["mask_head"] = MaskHead(
            in_channels=channels, num_classes=num_classes, conv_dims=(channels,) * 4, norm=bn
        )
    if "keypoint" in heads:
        branches["keypoint_pooler"] = MultiScaleRoIAlign(output_size=14, sampling_ratio=2, aligned=aligned)
        branches["keypoint_head"] = KeypointHead(
            in_channels=channels, num_keypoints=num_keypoints, conv_dims=(2 * channels,) * 8, norm=bn
        )
    roi_heads = RoIHeads(
        box_pooler=MultiScaleRoIAlign(output_size=7, sampling_ratio=2, aligned=aligned),
        box_head=box_head,
        box_predictor=box_predictor,
        **branches,
        matcher=Matcher(0.5, 0.5, allow_low_quality_matches=False),
        sampler=BalancedSampler(box_batch_size_per_image, 0.25),
        box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0)),
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
    )
    transform = ImageTransform(min_size=min_size, max_size=max_size)
    return MaskRCNN(
        transform=transform, backbone=backbone, rpn=rpn, roi_heads=roi_heads, paste_masks=paste_masks
    )


# torchvision's weight files are named NAME-HASH.EXT, HASH being the first hex digits of the file's SHA-256
# (the rule torch.hub.load_state_dict_from_url(check_hash=True) applies).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.[^.]+$")


def expected_hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix in the file name of `url` (`...-bf2d0c1e.pth` -> `bf2d0c1e`), or None."""
    m = _HASH_IN_NAME.search(os.path.basename(url))
    return m.group(1) if m else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _download_lock(path: Path):
    """An exclusive lock on `path`.lock, held while one process downloads `path`: every rank of a torchrun
    job (and every other run sharing the cache) waits for the download in progress instead of writing the
    same file. A file lock needs no process group. Without fcntl (Windows) there is no lock.

    The lock file is removed on the way out, so the cache keeps only weights. A process that then locks the
    removed file and one that creates a new one could both download, but only after a failed download: each
    writes its own `.partial` file and renames it into place atomically, so that costs time, never a file."""
    if fcntl is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish downloading {path.name} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(url: str) -> Path:
    """The cached file for `url` (downloaded with a progress bar on first use, one process at a time: see
    `_download_lock`) or a WeightsError saying what to fetch and where to put it. A download whose SHA-256
    does not start with the prefix in its file name is deleted and raises."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(url)
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with _download_lock(path):
        if path.is_file():  # another process downloaded it while this one waited
            return path
        tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            download_url_to_file(url, str(tmp), progress=True)
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise WeightsError(
                f"could not download {url} ({e}). Fetch that file on a machine with internet access and put "
                f"it at {path}, or pass a local file with --weights PATH (and --arch for a bare state dict)."
            ) from e
        expected = expected_hash_prefix(url)
        if expected is not None and not (got := _sha256(tmp)).startswith(expected):
            size = tmp.stat().st_size
            tmp.unlink(missing_ok=True)
            raise WeightsError(
                f"the download of {url} is corrupt: its SHA-256 is {got} ({size} bytes) but its name "
                f"says it starts with {expected}. The file was deleted; run again to retry the download, "
                f"or fetch it by hand, check `sha256sum` starts with {expected}, and put it at {path}."
            )
        tmp.replace(path)
    return path


def _is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive: a zip whose record holds compiled code (`<name>/code/`)."""
    if not zipfile.is_zipfile(path):
        return False
    with suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())
    return False


def read_file(path: str | Path) -> dict:
    """torch.load(path, weights_only=True) with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass a zoo name ({', '.join(WEIGHTS)}) or a file"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if _is_torchscript(path):
            raise WeightsError(
                f"{path} is a TorchScript program (mrseg export --format torchscript), which runs as it is, "
                "in torch.jit.load; mrseg reads weights: give the .pt checkpoint it was exported from, or an "
                ".onnx export (mrseg export --format onnx)"
            ) from e
        raise WeightsError(
            f"{path}: not a PyTorch weights file that loads with weights_only=True ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise WeightsError(
            f"{path}: expected a state dict or an mrseg checkpoint, found a {type(obj).__name__}"
        )
    return obj


def compare_state_dict(model: nn.Module, state_dict: dict) -> tuple[dict, list[str], list[str], list[str]]:
    """How `state_dict` (our keys) fits `model`: (the state dict less BatchNorm counters the model lacks,
    missing keys (counters aside), unexpected keys, keys whose shapes differ), the key lists sorted. The
    one comparison behind every load: strict, ImageNet backbone, fine-tuning."""
    own = model.state_dict()
    state_dict = {
        k: v for k, v in state_dict.items() if not (k.endswith("num_batches_tracked") and k not in own)
    }
    missing = sorted(k for k in own if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(k for k, v in state_dict.items() if k in own and v.shape != own[k].shape)
    return state_dict, missing, unexpected, mismatched


def load_state_dict(model: nn.Module, state_dict: dict, source: str = "weights") -> None:
    """Loads a state dict (ours or torchvision's keys) strictly; a mismatch raises a WeightsError naming the
    missing / unexpected / mis-shaped keys."""
    try:
        if is_torchvision_state_dict(state_dict):
            state_dict = torchvision_to_mrseg(state_dict)
    except KeyError as e:
        raise WeightsError(f"{source}: {e.args[0]}") from e
    state_dict, missing, unexpected, mismatched = compare_state_dict(model, state_dict)
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(model.state_dict()[k].shape)}"
        for k in mismatched
    ]
    parts = []
    named = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
    for name, keys in named:
        if keys:
            more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
            parts.append(f"{len(keys)} {name}: {', '.join(keys[:8])}{more}")
    if parts:
        raise WeightsError(
            f"{source} does not fit the model: {'; '.join(parts)}. Check --arch (and the number of classes)."
        )
    model.load_state_dict(state_dict, strict=False)


def _num_keypoints_of(state_dict: dict) -> int:
    """The keypoint heatmaps of a state dict's keypoint head (ours or torchvision's keys); 17 without one."""
    keys = ("roi_heads.keypoint_head.deconv.weight", "roi_heads.keypoint_predictor.kps_score_lowres.weight")
    for key in keys:
        if key in state_dict:
            return int(state_dict[key].shape[1])  # ConvTranspose2d weight: [in, out, k, k]
    return 17


def _default_classes(num_classes: int, num_keypoints: int = 0) -> list[dict]:
    if num_classes == 90:
        return coco_label_classes()
    if num_classes == 1 and num_keypoints == 17:
        return coco_person_classes()
    return [{"id": i, "name": f"class{i}"} for i in range(1, num_classes + 1)]


def load_model(
    weights: str | Path, arch: str | None = None, device: str | torch.device = "cpu", **model_kwargs
) -> tuple[MaskRCNN, ModelInfo]:
    """(model in eval mode on `device`, ModelInfo) from a zoo name (see WEIGHTS), an mrseg checkpoint (.pt
    written by `mrseg train`; its arch says which heads it has), or a state-dict file (torchvision's or ours)
    with `arch` (an ARCH_NAMES name). `model_kwargs`: inference settings for `build_model`
    (box_score_thresh, box_nms_thresh, box_detections_per_img, paste_masks)."""
    name = str(weights)
    if name in WEIGHTS:
        spec = WEIGHTS[name]
        if arch is not None and arch != spec.arch:
            raise WeightsError(
                f"--weights {name} is a {spec.arch} model; drop --arch or pass --arch {spec.arch}"
            )
        state = read_file(fetch(spec.url))
        classes = coco_person_classes() if spec.person_keypoints else coco_label_classes()
        model = build_model(
            spec.arch, len(classes), frozen_bn_eps=spec.frozen_bn_eps, min_size=spec.min_size, **model_kwargs
        )
        info = ModelInfo(arch=spec.arch, classes=classes, source=name)
    elif is_checkpoint(obj := read_file(name)):
        try:
            ckpt = read_checkpoint(obj, name)
        except CheckpointFormatError as e:
            raise WeightsError(str(e)) from e
        if ckpt.arch not in ARCH_NAMES:
            raise WeightsError(f"{name}: checkpoint arch {ckpt.arch!r} is not one of {', '.join(ARCH_NAMES)}")
        arch_heads = split_arch(ckpt.arch)[1]
        if arch_heads != ckpt.heads:
            raise WeightsError(
                f"{name}: the checkpoint's arch {ckpt.arch!r} has the heads {list(arch_heads)} but its "
                f"heads key says {list(ckpt.heads)}; re-save it with matching arch and heads"
            )
        model = build_model(ckpt.arch, len(ckpt.classes), **ckpt.build_kwargs, **model_kwargs)
        state = ckpt.state_dict
        info = ModelInfo(arch=ckpt.arch, classes=ckpt.classes, source=name)
    else:
        state = obj["model"] if isinstance(obj.get("model"), dict) else obj
        if arch is None:
            raise WeightsError(
                f"{name} is a bare state dict: say which architecture it is with --arch "
                f"({', '.join(ARCH_NAMES)})"
            )
        if arch not in ARCH_NAMES:
            raise WeightsError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
        key = "roi_heads.box_predictor.cls_score.weight"  # the same name in torchvision's keys and ours
        if key not in state:
            raise WeightsError(f"the state dict has no {key}; is it a Mask R-CNN?")
        num_classes = int(state[key].shape[0]) - 1
        num_keypoints = _num_keypoints_of(state)
        model = build_model(arch, num_classes, num_keypoints=num_keypoints, **model_kwargs)
        has_keypoints = "keypoint" in split_arch(arch)[1]
        classes = _default_classes(num_classes, num_keypoints if has_keypoints else 0)
        info = ModelInfo(arch=arch, classes=classes, source=name)
    load_state_dict(model, state, name)
    return model.to(device).eval(), info


# The state-dict prefix of each optional head: a source without it leaves that head as built (fine-tuning a
# keypoint model from COCO mask weights, or a mask model from a box-only checkpoint).
HEAD_PREFIXES = {"mask": "roi_heads.mask_head.", "keypoint": "roi_heads.keypoint_head."}
# The layers whose shape follows the number of classes (or keypoints): the only ones a fine-tuning run may
# leave as built because the file's differ; any other shape difference is another model.
CLASS_SPECIFIC = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_head.predictor.",
    "roi_heads.keypoint_head.deconv.",
)


def load_pretrained(model: MaskRCNN, weights: str | Path, arch: str) -> tuple[list[str], list[str]]:
    """Initialises `model` (built for `arch`) for training from `weights`: "imagenet" (the ResNet backbone),
    "none", a zoo name or a file of the same layout (backbone, FPN, box head; `split_arch`), whatever heads it
    has. Returns (resized, fresh): the state-dict keys left as built because their shapes differ (other
    number of classes), and those of the heads of `arch` that the weights lack."""
    name = str(weights)
    if name == "none":
        return [], []
    if name == "imagenet":
        depth = ARCHS[split_arch(arch)[0]].depth
        state = resnet_to_mrseg(read_file(fetch(IMAGENET_URLS[depth])))
        state, missing, _, _ = compare_state_dict(model, state)
        missing = [k for k in missing if k.startswith("backbone.bottom_up.")]
        if missing:
            raise WeightsError(
                f"ImageNet ResNet-{depth} weights lack {len(missing)} backbone keys: {missing[:5]}"
            )
        model.load_state_dict(state, strict=False)
        return [], []
    if name in WEIGHTS:
        spec = WEIGHTS[name]
        if split_arch(spec.arch)[0] != split_arch(arch)[0]:
            raise WeightsError(
                f"--weights {name} is a {spec.arch} model; it can start an --arch of the same layout "
                f"({', '.join(a for a in ARCH_NAMES if split_arch(a)[0] == split_arch(spec.arch)[0])}), "
                f"not {arch}"
            )
        state = read_file(fetch(spec.url))
        if spec.frozen_bn_eps != 1e-5:
            set_frozen_bn_eps(model, spec.frozen_bn_eps)
    else:
        obj = read_file(name)
        state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    if is_torchvision_state_dict(state):
        state = torchvision_to_mrseg(state)
    state, missing, unexpected, skipped = compare_state_dict(model, state)
    fitting = {k: v for k, v in state.items() if k not in skipped and k not in unexpected}
    absent = [p for p in HEAD_PREFIXES.values() if not any(k.startswith(p) for k in state)]
    fresh = [k for k in missing if k.startswith(tuple(absent))]  # none when nothing is absent
    missing = [k for k in missing if k not in skipped and k not in fresh]
    if missing:
        raise WeightsError(f"{name} does not fit --arch {arch}: {len(missing)} missing keys: {missing[:8]}")
    other = [k for k in skipped if not k.startswith(CLASS_SPECIFIC)]
    if other:
        own = model.state_dict()
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in other[:4])
        raise WeightsError(
            f"{name} does not fit --arch {arch}: {len(other)} tensors of another shape ({shapes}); is it "
            "another --channels or --norm? Leave them out to take the file's"
        )
    model.load_state_dict(fitting, strict=False)
    return skipped, fresh


def set_frozen_bn_eps(model: nn.Module, eps: float) -> None:
    """Sets eps of every FrozenBatchNorm2d (torchvision's COCO v1 weights were trained with eps = 0)."""
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.eps = eps
