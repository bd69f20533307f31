"""layers.py against torchvision: ConvNorm is Conv2dNormActivation, conv_stack + init_kaiming build exactly
torchvision's MaskRCNNHeads (same seed, same weights, same outputs), and init_kaiming initialises a
transposed conv as torchvision's MaskRCNNPredictor does."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import Conv2dNormActivation, FrozenBatchNorm2d

from mrseg.model.layers import ConvNorm, conv_stack, init_kaiming

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/model/conftest.py

NORMS = {
    "none": None,
    "bn": nn.BatchNorm2d,
    "gn": partial(nn.GroupNorm, 4),
    "frozen": FrozenBatchNorm2d,
}


def as_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ConvNorm's keys (`conv.`, `norm.`) under Conv2dNormActivation's (`0.`, `1.`); `i.` prefixes kept."""
    return {k.replace("conv.", "0.").replace("norm.", "1."): v for k, v in state.items()}


def randomise_norms(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for m in module.modules():
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(m, name, None)
                if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d)) and t is not None:
                    t.copy_(0.5 + torch.rand(t.shape, generator=generator))


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize(("kernel_size", "stride"), [(1, 1), (3, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("relu", [True, False])
def test_conv_norm_is_torchvisions_conv2d_norm_activation(norm, kernel_size, stride, relu):
    g = torch.Generator().manual_seed(kernel_size * 10 + stride)
    ours = ConvNorm(8, 12, kernel_size=kernel_size, stride=stride, norm=NORMS[norm], relu=relu).eval()
    ref = Conv2dNormActivation(8, 12, kernel_size, stride, norm_layer=NORMS[norm],
                               activation_layer=nn.ReLU if relu else None).eval()  # fmt: skip
    randomise_norms(ours, g)
    assert (ours.conv.bias is None) == (norm != "none")
    ref.load_state_dict(as_torchvision(ours.state_dict()))  # strict: the same parameters and buffers
    x = torch.randn(2, 8, 15, 17, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
        assert bool(ours(x).min() >= 0) == relu


@pytest.mark.parametrize("norm", ["none", "gn"])
@pytest.mark.parametrize("dims", [(16,), (16, 16, 16, 16), (8, 24, 12)])
def test_conv_stack_with_init_kaiming_is_torchvisions_mask_head(norm, dims):
    torch.manual_seed(3)
    convs, out_channels = conv_stack(10, dims, NORMS[norm])
    init_kaiming(convs)
    torch.manual_seed(3)
    ref = MaskRCNNHeads(10, list(dims), 1, norm_layer=NORMS[norm])
    assert out_channels == dims[-1] and len(convs) == len(dims)
    ours = as_torchvision(convs.state_dict())
    assert ours.keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    x = torch.randn(2, 10, 14, 14)
    with torch.no_grad():
        y = x
        for conv in convs:
            y = conv(y)
        torch.testing.assert_close(y, ref(x), rtol=0, atol=0)


def test_init_kaiming_reaches_transposed_convs_like_torchvisions_mask_predictor():
    torch.manual_seed(5)
    ref = MaskRCNNPredictor(16, 8, 3)
    torch.manual_seed(5)
    layers = OrderedDict(
        conv5_mask=nn.ConvTranspose2d(16, 8, 2, 2, 0),
        relu=nn.ReLU(inplace=True),
        mask_fcn_logits=nn.Conv2d(8, 3, 1, 1, 0),
    )
    ours = nn.Sequential(layers)
    init_kaiming(ours)
    for name in ("conv5_mask.weight", "mask_fcn_logits.weight"):
        torch.testing.assert_close(ours.state_dict()[name], ref.state_dict()[name], rtol=0, atol=0, msg=name)
    assert not ours.conv5_mask.bias.any() and not ours.mask_fcn_logits.bias.any()  # torchvision keeps its own


def test_init_kaiming_leaves_other_layers_alone():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    init_kaiming(module)
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"0.weight", "0.bias"}
