"""Inference-time fusion: fold frozen (or eval-mode) BatchNorm into the convolution before it, and store
convolution weights channels_last so that oneDNN (CPU) and cuDNN run them without layout reorders.

`fuse_for_inference(model)` returns a COPY: it shares every tensor it does not rewrite (linear layers, biases
of unfused convs, anchors) with the original; the folded / re-laid-out conv weights are new tensors. It is a
snapshot: rebuild it after changing the original's weights.

Folding: for y = norm(conv(x)) with scale = gamma / sqrt(running_var + eps), shift = beta - running_mean *
scale, the fused conv has weight W * scale (per output channel) and bias b * scale + shift. Results differ
from the unfused model only by float rounding (about 1e-6 relative).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, nn.BatchNorm2d)
        and not norm.training
        and norm.track_running_stats
        and norm.running_var is not None
        and norm.affine
    )


def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A new Conv2d computing norm(conv(x)) for a FrozenBatchNorm2d or an eval-mode BatchNorm2d `norm`."""
    # The products are rounded to the conv's dtype once, from float64 (float32 rounds them twice). Against the
    # unfused model it is a median gain only (benchmarks/fold_rounding.py --sweep: 1.1e-2 vs 1.7e-2 px): the
    # convolutions' own accumulation order dominates.
    wide = torch.float32 if conv.weight.device.type == "mps" else torch.float64  # MPS has no float64
    with torch.no_grad():
        scale = norm.weight.to(wide) * torch.rsqrt(norm.running_var.to(wide) + norm.eps)
        shift = norm.bias.to(wide) - norm.running_mean.to(wide) * scale
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight.to(wide) * scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias.to(wide) * scale + shift
        fused.bias.copy_(bias)
    fused.requires_grad_(False)
    return fused


def conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names of (conv, norm) children of `module` where the forward applies norm right after conv: consecutive
    children of an nn.Sequential, and the `conv`/`norm` and `conv{i}`/`bn{i}` attribute pairs of ConvNorm,
    the ResNet stem and torchvision's BasicBlock / Bottleneck."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        pairs = itertools.pairwise(children)
        return [(a, b) for a, b in pairs if type(children[a]) is nn.Conv2d and _foldable(children[b])]
    convs = [name for name, child in children.items() if type(child) is nn.Conv2d and name.startswith("conv")]
    pairs = [(name, "norm" if name == "conv" else "bn" + name[4:]) for name in convs]
    return [(conv, norm) for conv, norm in pairs if _foldable(children.get(norm))]


def fold_batchnorms(model: nn.Module) -> int:
    """Folds every (conv, norm) pair of `model` in place (norm -> nn.Identity). Returns how many."""
    count = 0
    for module in list(model.modules()):
        for conv_name, norm_name in conv_norm_pairs(module):
            fused = fold_conv_norm(getattr(module, conv_name), getattr(module, norm_name))
            setattr(module, conv_name, fused)
            setattr(module, norm_name, nn.Identity())
            count += 1
    return count


def fuse_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of `model` for inference: BatchNorms folded into their convs, conv weights
    channels_last (which makes the activations channels_last too). Same forward contract and outputs up to
    float rounding. The original is not modified."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    fused = copy.deepcopy(model, shared).eval()
    fold_batchnorms(fused)
    if not channels_last:
        return fused
    for m in fused.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # a new Parameter (not `.data =`): shared Parameters of the original model keep their layout
            weight = m.weight.detach().contiguous(memory_format=torch.channels_last)
            m.weight = nn.Parameter(weight, requires_grad=False)
    return fused
