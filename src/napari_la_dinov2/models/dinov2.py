"""DINOv2 ViT backbone (Hugging Face transformers) with the paper's token head and conv decoder.

Input ``Bx3xHxW`` (H, W multiples of 14; 448 in the paper) -> patch tokens ``BxCx(H/14)x(W/14)``
-> LinearClassifierToken (a 1x1 conv on the token map) -> decoder (conv + 2x upsampling blocks,
then resize to the input size) -> logits ``Bx1xHxW``.

The backbone is built from a known architecture (random weights, no network) or loaded with
``from_pretrained`` from a hub repo id, the local Hugging Face cache or a local folder; only its
patch tokens reach the head, so any DINOv2 variant (with or without registers) plugs in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

PATCH_SIZE = 14

# Architectures of the official checkpoints, so a model can be built (for a speed benchmark, or
# to receive a fine-tuned checkpoint's weights) without downloading anything.
DINOV2_ARCHITECTURES: dict[str, dict] = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "giant": dict(
        hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True
    ),
}


# A checkpoint's backbone_config cannot ask for more than this (the giant has 40 layers, 1536
# features, 24 heads): building 10^6 layers would hang before any memory bound is reached.
BACKBONE_LIMITS = dict(
    num_hidden_layers=64,
    hidden_size=4096,
    num_attention_heads=64,
    intermediate_size=4 * 4096,
    num_register_tokens=64,
    image_size=4096,
)
MAX_DECODER_BLOCKS = 8


def _check_backbone_config(config) -> None:
    if not isinstance(config, dict):
        raise ValueError("backbone_config must be a mapping of DINOv2 settings")
    for key, limit in BACKBONE_LIMITS.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or not 0 <= value <= limit):
            raise ValueError(
                f"backbone_config.{key} must be an integer in 0..{limit}, not {value!r}"
            )


def hub_repo_id(size: str, registers: bool) -> str:
    return f"facebook/dinov2-{'with-registers-' if registers else ''}{size}"


def _config_class(registers: bool):
    if registers:
        from transformers import Dinov2WithRegistersConfig

        return Dinov2WithRegistersConfig
    from transformers import Dinov2Config

    return Dinov2Config


def _model_class(model_type: str):
    if model_type == "dinov2_with_registers":
        from transformers import Dinov2WithRegistersModel

        return Dinov2WithRegistersModel
    if model_type == "dinov2":
        from transformers import Dinov2Model

        return Dinov2Model
    raise ValueError(
        f"backbone model_type must be dinov2 or dinov2_with_registers, not {model_type}"
    )


def load_pretrained_backbone(source: str, registers: bool) -> nn.Module:
    """Load DINOv2 weights from a hub repo id, the HF cache, or a local folder (offline-safe).
    Only safetensors weights are read: a folder or repo holding only pickled weights
    (``pytorch_model.bin``) is refused, since unpickling it could run any code."""
    from transformers import AutoConfig

    from ..hub import offline, quiet_hub

    _refuse_pickled_only(source)
    cache_only = offline()
    try:
        with quiet_hub():
            config = AutoConfig.from_pretrained(source, local_files_only=cache_only)
            model = _model_class(config.model_type).from_pretrained(
                source, use_safetensors=True, local_files_only=cache_only
            )
    except OSError as error:
        raise InputError(
            f"the DINOv2 weights '{source}' are not in the local Hugging Face cache as "
            "model.safetensors and could not be downloaded; run once with a network (or `hf "
            f"download {source}`), or give a local folder with --backbone-source "
            f"({error.__class__.__name__})."
        ) from None
    expected = "dinov2_with_registers" if registers else "dinov2"
    if config.model_type != expected:
        raise InputError(f"'{source}' holds a {config.model_type} model, not {expected}.")
    return model


def _refuse_pickled_only(source: str) -> None:
    from pathlib import Path

    folder = Path(source).expanduser()
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        if pickled:
            raise InputError(
                f"{folder} holds only pickled weights ({pickled[0]}), which can run any code "
                "when loaded; convert them to model.safetensors."
            )


class LinearClassifierToken(nn.Module):
    """The paper's token head: a 1x1 conv over the (H/14)x(W/14) grid of patch tokens."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, token_map: torch.Tensor) -> torch.Tensor:
        return self.conv(token_map)


def _up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ConvDecoder(nn.Module):
    """Conv + 2x upsampling blocks from the token grid (by default 32 -> 64 -> 128 at 448
    input), a refining conv, a 1x1 conv to logits, then a bilinear resize of the one-channel
    logits to the input size.

    Why this light: with a frozen backbone the decoder is all that trains, and the feature cache
    removes the backbone from each step, so the decoder's cost is the step's cost. Measured here
    (1 CPU thread, batch 32, forward + backward, per 448x448 slice): head 128 + (64, 32, 16)
    234 ms, head 64 + (32, 16) 50 ms, against about 700 ms for a ViT-S/14 forward. Wider or
    deeper decoders are one argument away (``head_channels``, ``decoder_channels``).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], out_channels: int = 1):
        super().__init__()
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*[_up_block(a, b) for a, b in zip(widths, widths[1:])])
        self.refine = nn.Sequential(
            nn.Conv2d(widths[-1], widths[-1], kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.out = nn.Conv2d(widths[-1], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.out(self.refine(self.blocks(x)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DinoV2Segmenter(nn.Module):
    """DINOv2 backbone -> token head -> conv decoder. ``forward(Bx3xHxW) -> Bx1xHxW`` logits."""

    family = "dinov2"

    def __init__(
        self,
        *,
        size: str = "small",
        registers: bool = False,
        pretrained: bool = True,
        backbone_source: str | None = None,
        backbone_config: dict | None = None,
        freeze_backbone: bool = True,
        head_channels: int = 64,
        decoder_channels: tuple[int, ...] = (32, 16),
    ):
        super().__init__()
        if size not in DINOV2_ARCHITECTURES:
            raise ValueError(f"size must be one of {sorted(DINOV2_ARCHITECTURES)}, not {size!r}")
        if head_channels < 1 or not decoder_channels or min(decoder_channels) < 1:
            raise ValueError("head_channels and decoder_channels must be positive")
        if len(decoder_channels) > MAX_DECODER_BLOCKS:
            raise ValueError(f"decoder_channels lists at most {MAX_DECODER_BLOCKS} widths")
        self.size, self.registers = size, registers
        if backbone_config is not None:
            # Rebuilding a saved checkpoint (weights follow) or a tiny test model.
            _check_backbone_config(backbone_config)
            config = _config_class(registers)(**backbone_config)
            self.backbone = _model_class(config.model_type)(config)
        elif pretrained:
            self.backbone = load_pretrained_backbone(
                backbone_source or hub_repo_id(size, registers), registers
            )
        else:
            extra = {"num_register_tokens": 4} if registers else {}
            config = _config_class(registers)(
                **DINOV2_ARCHITECTURES[size], image_size=518, patch_size=PATCH_SIZE, **extra
            )
            self.backbone = _model_class(config.model_type)(config)
        if self.backbone.config.patch_size != PATCH_SIZE:
            raise ValueError(
                f"expected a /14 backbone, got patch size {self.backbone.config.patch_size}"
            )
        self.embed_dim = int(self.backbone.config.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(self.backbone.config, "num_register_tokens", 0))
        self.head = LinearClassifierToken(self.embed_dim, head_channels)
        self.decoder = ConvDecoder(head_channels, tuple(decoder_channels))
        self.freeze_backbone = freeze_backbone
        self.set_backbone_trainable(not freeze_backbone)

    def set_backbone_trainable(self, trainable: bool) -> None:
        self.freeze_backbone = not trainable
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(trainable)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone stays deterministic (no dropout/drop-path)
            self.backbone.eval()
        return self

    def rebuild_kwargs(self) -> dict:
        """Constructor arguments that rebuild this architecture with no download."""
        config = self.backbone.config.to_dict()
        for key in (
            "transformers_version",
            "architectures",
            "_name_or_path",
            "torch_dtype",
            "dtype",
            "out_features",
            "out_indices",
            "stage_names",
        ):
            config.pop(key, None)
        return dict(
            size=self.size,
            registers=self.registers,
            pretrained=False,
            backbone_config=config,
            freeze_backbone=self.freeze_backbone,
            head_channels=self.head.conv.out_channels,
            decoder_channels=[block[1].out_channels for block in self.decoder.blocks],
        )

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xHxW`` -> patch-token map ``BxCx(H/14)x(W/14)`` (what the feature cache stores)."""
        height, width = images.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"input size {height}x{width} is not a multiple of {PATCH_SIZE}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            tokens = self.backbone(pixel_values=images).last_hidden_state
        patches = tokens[:, self.num_prefix_tokens :, :]
        grid = (height // PATCH_SIZE, width // PATCH_SIZE)
        return patches.transpose(1, 2).reshape(images.shape[0], self.embed_dim, *grid)

    def decode(self, token_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Token map -> logits ``Bx1xHxW`` (the trainable part when the backbone is frozen)."""
        return self.decoder(self.head(token_map), size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.backbone_features(images), tuple(images.shape[-2:]))
