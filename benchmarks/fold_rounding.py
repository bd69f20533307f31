"""How far BatchNorm folding moves the boxes of a random-weight R50 Faster R-CNN, against the noise floor.

Seeded torchvision `fasterrcnn_resnet50_fpn` (as tests/cli/test_predict_keypoints.py builds it, short side
160) on a real photo, 1 thread. Prints the largest box / score difference from torchvision's own output for:
torchvision at 2 threads; torchvision with torch's `fuse_conv_bn_eval` on its ResNet blocks; mrseg's model
unfused; and mrseg's predict copy (`fuse_for_inference`), with and without channels_last weights.
`--sweep`: the largest box difference of the predict copy with the weights folded in float64 (what
`fold_conv_norm` does) and in float32 (folded products rounded twice, as before), over seeded Faster R-CNN
and Keypoint R-CNN models (seeds 0-2) and two photos; median and max of each.

    python benchmarks/fold_rounding.py [--sweep]
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import cv2
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mrseg.model.fuse as fuse  # noqa: E402
from mrseg.model.fuse import fuse_for_inference  # noqa: E402
from tests.model.conftest import build_ours_from, build_torchvision_detector  # noqa: E402

SIZES = {"min_size": 160, "max_size": 240}


def torch_fold_blocks(module: nn.Module) -> None:
    """torch's `fuse_conv_bn_eval` on every `convN` / `bnN` pair of torchvision's ResNet blocks and stem."""
    for child in module.children():
        torch_fold_blocks(child)
    children = dict(module.named_children())
    for name, conv in children.items():
        norm = children.get("bn" + name[4:]) if name.startswith("conv") else None
        if type(conv) is nn.Conv2d and isinstance(norm, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(norm.weight.numel(), eps=norm.eps).eval()
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, key).data.copy_(getattr(norm, key))
            setattr(module, name, fuse_conv_bn_eval(conv, bn))
            setattr(module, "bn" + name[4:], nn.Identity())


def fold_in_float32(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """`fold_conv_norm` as it was: scale, shift and the products in float32."""
    fused = FOLD(conv, norm)
    with torch.no_grad():
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
    return fused


FOLD = fuse.fold_conv_norm


def photo(path: Path) -> list[torch.Tensor]:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return [torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255]


def sweep() -> None:
    photos = [photo(p) for p in sorted((ROOT / "tests/assets/nuts/images").glob("*.jpg"))[:2]]
    found: dict[str, list[float]] = {"float64 fold": [], "float32 fold": []}
    for kind, arch, score, extra in (
        ("faster", "r50-fpn-box", 0.95, {"num_classes": 91}),
        ("keypoint", "r50-fpn-kp", 0.9, {}),
    ):
        for seed in (0, 1, 2):
            tv = build_torchvision_detector(kind, seed=seed, box_score_thresh=score, **SIZES, **extra)
            ours = build_ours_from(tv, arch, box_score_thresh=score, **SIZES)
            for image in photos:
                with torch.inference_mode():
                    (ref,) = tv(image)
                    for name, fold in (("float64 fold", FOLD), ("float32 fold", fold_in_float32)):
                        fuse.fold_conv_norm = fold
                        (out,) = fuse_for_inference(ours)(image)
                        fuse.fold_conv_norm = FOLD
                        same = len(out["boxes"]) == len(ref["boxes"]) > 0
                        diff = (out["boxes"] - ref["boxes"]).abs().max().item() if same else math.nan
                        found[name].append(diff)
            pairs = ", ".join(f"{k} {v[-2]:.1e} / {v[-1]:.1e} px" for k, v in found.items())
            print(f"{kind} seed {seed}: {pairs}")
    for name, values in found.items():
        ok = sorted(v for v in values if not math.isnan(v))
        print(f"{name}: median {ok[len(ok) // 2]:.2e} px, max {ok[-1]:.2e} px over {len(ok)} models x photos")


def main() -> None:
    torch.set_num_threads(1)
    if "--sweep" in sys.argv[1:]:
        sweep()
        return
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "tests/assets/nuts/images/0.jpg")), cv2.COLOR_BGR2RGB)
    image = [torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255]
    tv = build_torchvision_detector("faster", seed=1, num_classes=91, box_score_thresh=0.95, **SIZES)

    def run(model: nn.Module, threads: int = 1) -> dict:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            (out,) = model(image)
        torch.set_num_threads(1)
        return out

    ref = run(tv)
    tv_folded = copy.deepcopy(tv)
    torch_fold_blocks(tv_folded.backbone.body)
    ours = build_ours_from(tv, "r50-fpn-box", box_score_thresh=0.95, **SIZES)
    cases = {
        "torchvision, 2 threads": run(tv, threads=2),
        "torchvision, torch's fuse_conv_bn_eval": run(tv_folded),
        "mrseg, unfused": run(ours),
        "mrseg predict copy (folded, channels_last)": run(fuse_for_inference(ours)),
        "mrseg folded, contiguous weights": run(fuse_for_inference(ours, channels_last=False)),
    }
    print(f"{len(ref['boxes'])} detections; largest difference from torchvision at 1 thread:")
    for name, out in cases.items():
        if len(out["boxes"]) != len(ref["boxes"]):
            print(f"  {name}: {len(out['boxes'])} detections")
            continue
        box = (out["boxes"] - ref["boxes"]).abs().max().item()
        score = (out["scores"] - ref["scores"]).abs().max().item()
        print(f"  {name}: boxes {box:.2e} px, scores {score:.2e}")


if __name__ == "__main__":
    main()
