"""The paper's CNN baselines: UNet (MONAI's, as written out in :mod:`.unet`), and MONAI's
Attention UNet and ResNet50-encoder UNet (imported from MONAI when one is built).

Each takes ``BxCxHxW`` slices (320x320 in the paper) and returns ``Bx1xHxW`` logits. The
ResNet50 encoder gets torchvision's ImageNet weights, published on the hub as safetensors
(``timm/resnet50.tv_in1k``), through huggingface_hub: no torchvision, no pickle.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from .unet import UNet

RESNET50_IMAGENET_REPO = "timm/resnet50.tv_in1k"


MAX_LEVELS = 8  # 2^8 downsampling already turns a 2048 slice into 8x8


def _check_channels(channels, strides) -> None:
    if not 2 <= len(channels) <= MAX_LEVELS or any(int(c) < 1 for c in channels):
        raise ValueError(f"channels must list 2 to {MAX_LEVELS} positive widths, not {channels}")
    if len(strides) != len(channels) - 1 or any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must have one positive entry fewer than channels, got {strides}")


class UNet2D(nn.Module):
    family = "cnn"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        num_res_units: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_channels(channels, strides)
        if in_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError("in_channels must be >= 1 and dropout in [0, 1)")
        if not isinstance(num_res_units, int) or not 0 <= num_res_units <= MAX_LEVELS:
            raise ValueError(f"num_res_units must be an integer in 0..{MAX_LEVELS}")
        self._kwargs = dict(
            in_channels=in_channels,
            channels=list(channels),
            strides=list(strides),
            num_res_units=num_res_units,
            dropout=dropout,
        )
        # MONAI's UNet (spatial_dims=2, norm="batch") without MONAI's package-wide import:
        # the same layers under the same names (see models/unet.py).
        self.net = UNet(
            in_channels=in_channels,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            dropout=dropout,
        )

    def rebuild_kwargs(self) -> dict:
        return dict(self._kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionUNet2D(nn.Module):
    family = "cnn"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_channels(channels, strides)
        if in_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError("in_channels must be >= 1 and dropout in [0, 1)")
        self._kwargs = dict(
            in_channels=in_channels, channels=list(channels), strides=list(strides), dropout=dropout
        )
        from monai.networks.nets import AttentionUnet

        self.net = AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple(strides),
            dropout=dropout,
        )

    def rebuild_kwargs(self) -> dict:
        return dict(self._kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_resnet50_imagenet(encoder: nn.Module, source: str = RESNET50_IMAGENET_REPO) -> None:
    """Copy torchvision-layout ResNet50 ImageNet weights (safetensors) into MONAI's encoder."""
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            weights_file = path / "model.safetensors"
        else:
            from huggingface_hub import hf_hub_download

            from ..hub import offline, quiet_hub

            with quiet_hub():
                weights_file = Path(
                    hf_hub_download(source, "model.safetensors", local_files_only=offline())
                )
        weights = load_file(str(weights_file))
    except Exception as error:
        raise InputError(
            f"the ResNet50 ImageNet weights '{source}' are not in the local Hugging Face cache "
            "and could not be downloaded; run once with a network, pass pretrained=False, or "
            f"give a local folder holding model.safetensors ({error.__class__.__name__})."
        ) from None
    target = encoder.state_dict()
    wanted = {k for k in target if not k.endswith("num_batches_tracked")}
    missing = sorted(wanted - weights.keys())
    if missing:
        raise InputError(
            f"'{source}' is not a torchvision-layout ResNet50: {len(missing)} encoder tensors "
            f"are missing (first: {missing[0]})."
        )
    encoder.load_state_dict({k: weights[k] for k in wanted}, strict=False)


class ResNet50UNet2D(nn.Module):
    family = "cnn"

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights_source: str = RESNET50_IMAGENET_REPO,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ):
        super().__init__()
        if len(decoder_channels) != 5 or min(decoder_channels) < 1:
            raise ValueError("decoder_channels must list 5 positive widths")
        from monai.networks.nets import FlexibleUNet

        self.net = FlexibleUNet(
            in_channels=3,
            out_channels=1,
            backbone="resnet50",
            pretrained=False,
            spatial_dims=2,
            decoder_channels=tuple(decoder_channels),
        )
        self._kwargs = dict(
            pretrained=False, weights_source=weights_source, decoder_channels=list(decoder_channels)
        )
        if pretrained:
            load_resnet50_imagenet(self.net.encoder, weights_source)

    def rebuild_kwargs(self) -> dict:
        return dict(self._kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
