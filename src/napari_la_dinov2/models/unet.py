"""The 2D UNet of MONAI (``monai.networks.nets.UNet``), written out with torch alone.

Why: any ``monai.*`` import first runs MONAI's package-wide import (every submodule, and with
them transformers, matplotlib, pandas, ...: about 2.5 s on our 2-core machine), which would come
before the first slice of ``la-dinov2 segment``; the embedded default model is three of these
UNets. This module builds the same network from the same layers under the same names, so a
checkpoint written with MONAI's class loads here with ``strict=True`` and gives bit-identical
logits (``tests/test_unet.py`` checks both against MONAI's class on random weights).

The configuration is the one :class:`~napari_la_dinov2.models.baselines.UNet2D` uses: 3x3
kernels, batch norm, dropout, PReLU in MONAI's "NDA" order, residual units when
``num_res_units > 0``. The structure, from MONAI's ``UNet._create_block``: each level is
``Sequential(down, SkipConnection(next level), up)``, the skip concatenating its input with the
next level's output along the channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class Convolution(nn.Sequential):
    """MONAI's ``Convolution``: ``conv`` then ``adn`` (norm, dropout, PReLU) unless conv only.
    Padding 1 keeps the size at stride 1; a transposed one multiplies it by ``stride``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dropout: float = 0.0,
        conv_only: bool = False,
        transposed: bool = False,
    ):
        super().__init__()
        if transposed:
            conv = nn.ConvTranspose2d(
                in_channels, out_channels, 3, stride, padding=1, output_padding=stride - 1
            )
        else:
            conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1)
        self.add_module("conv", conv)
        if not conv_only:
            layers = [
                ("N", nn.BatchNorm2d(out_channels)),
                ("D", nn.Dropout(dropout)),
                ("A", nn.PReLU()),
            ]
            self.add_module("adn", nn.Sequential(OrderedDict(layers)))


class ResidualUnit(nn.Module):
    """MONAI's ``ResidualUnit``: ``subunits`` convolutions plus a residual path (a strided 3x3
    convolution when the size changes, 1x1 when only the channels do, else the input)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        subunits: int = 2,
        dropout: float = 0.0,
        last_conv_only: bool = False,
    ):
        super().__init__()
        self.conv = nn.Sequential()
        channels, step = in_channels, stride
        for unit in range(max(1, subunits)):
            conv_only = last_conv_only and unit == max(1, subunits) - 1
            self.conv.add_module(
                f"unit{unit}",
                Convolution(
                    channels, out_channels, stride=step, dropout=dropout, conv_only=conv_only
                ),
            )
            channels, step = out_channels, 1
        self.residual: nn.Module = nn.Identity()
        if stride != 1:
            self.residual = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        elif in_channels != out_channels:
            self.residual = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)


class SkipConnection(nn.Module):
    """The input concatenated with what ``submodule`` makes of it (channels first)."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    """``BxCxHxW`` -> ``Bx(out_channels)xHxW`` logits; H and W divisible by the strides'
    product. Arguments as MONAI's UNet with ``spatial_dims=2``, ``norm="batch"``."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        num_res_units: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_res_units, self.dropout = num_res_units, dropout
        self.model = self._level(in_channels, out_channels, list(channels), list(strides), True)

    def _level(self, inc: int, outc: int, channels: list[int], strides: list[int], top: bool):
        if len(channels) > 2:
            below = self._level(channels[0], channels[0], channels[1:], strides[1:], False)
            up_channels = channels[0] * 2
        else:
            below = self._down(channels[0], channels[1], 1)  # the bottleneck
            up_channels = channels[0] + channels[1]
        down = self._down(inc, channels[0], strides[0])
        up = self._up(up_channels, outc, strides[0], top)
        return nn.Sequential(down, SkipConnection(below), up)

    def _down(self, inc: int, outc: int, stride: int) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(
                inc, outc, stride=stride, subunits=self.num_res_units, dropout=self.dropout
            )
        return Convolution(inc, outc, stride=stride, dropout=self.dropout)

    def _up(self, inc: int, outc: int, stride: int, top: bool) -> nn.Module:
        conv = Convolution(
            inc,
            outc,
            stride=stride,
            dropout=self.dropout,
            transposed=True,
            conv_only=top and self.num_res_units == 0,
        )
        if self.num_res_units == 0:
            return conv
        unit = ResidualUnit(outc, outc, subunits=1, dropout=self.dropout, last_conv_only=top)
        return nn.Sequential(conv, unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
