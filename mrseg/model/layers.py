"""Small building blocks shared by the backbone and the heads."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import Tensor, nn

NormFactory = Callable[[int], nn.Module]


class ConvNorm(nn.Module):
    """Conv2d, then an optional norm, then an optional ReLU; the conv has a bias only when there is no norm.

    x [N, C_in, H, W] -> [N, C_out, H', W'].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        norm: NormFactory | None = None,
        relu: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=norm is None
        )
        self.norm = norm(out_channels) if norm is not None else None
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


def conv_stack(
    in_channels: int, dims: tuple[int, ...], norm: NormFactory | None
) -> tuple[nn.ModuleList, int]:
    """3x3 ConvNorm+ReLU layers of the given widths, and the channel count they end with."""
    widths = (in_channels, *dims)
    convs = nn.ModuleList(ConvNorm(a, b, kernel_size=3, norm=norm) for a, b in itertools.pairwise(widths))
    return convs, widths[-1]


def init_kaiming(module: nn.Module) -> None:
    """He init (fan_out, ReLU) of every conv and deconv in `module`, zero biases (torchvision's heads)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
