"""The model zoo: one small factory per variant and a plain dict from name to spec.

``build_model(name, **overrides)`` returns a :class:`~.checkpoint.LASegmenter` (the network plus
the preprocessing it expects); ``list_models()`` lists what can be built. Each spec also carries
the paper's training defaults for its family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .baselines import RESNET50_IMAGENET_REPO, AttentionUNet2D, ResNet50UNet2D, UNet2D
from .dinov2 import DINOV2_ARCHITECTURES, DinoV2Segmenter, hub_repo_id
from .ensemble import UNetEnsemble2D

# Paper section "Training": Adam + BCEWithLogits, lr/epochs/batch per family, early stopping.
DINOV2_TRAINING = dict(lr=1e-3, epochs=35, batch_size=32)
CNN_TRAINING = dict(lr=1e-4, epochs=75, batch_size=24)
# DINOv2: 448x448, grey repeated to 3 channels, ImageNet normalisation, plain resize.
DINOV2_PREPROCESSING = dict(input_size=448, channels=3, fit="stretch", intensity="imagenet")
# Baselines: 320x320 after padding to a square (no distortion), z-score normalisation.
CNN_PREPROCESSING = dict(input_size=320, channels=1, fit="pad", intensity="zscore")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str
    weights: str
    defaults: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


MODEL_SPECS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    MODEL_SPECS[spec.name] = spec


_SHORT = {"small": "s", "base": "b", "large": "l", "giant": "g"}
for _size in DINOV2_ARCHITECTURES:
    for _registers in (False, True):
        _name = f"dinov2_vit{_SHORT[_size]}14" + ("_reg" if _registers else "")
        _register(
            ModelSpec(
                name=_name,
                family="dinov2",
                builder=DinoV2Segmenter,
                description=f"DINOv2 ViT-{_SHORT[_size].upper()}/14"
                + (" with registers" if _registers else "")
                + " + token head + conv decoder, 448x448",
                weights=f"hub: {hub_repo_id(_size, _registers)} (backbone); head trained by you",
                defaults=dict(size=_size, registers=_registers),
                preprocessing=DINOV2_PREPROCESSING,
                training=DINOV2_TRAINING,
            )
        )

_register(
    ModelSpec(
        "unet",
        "cnn",
        UNet2D,
        "MONAI UNet (2 residual units per level), 320x320",
        "random init; train it",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        "attention_unet",
        "cnn",
        AttentionUNet2D,
        "MONAI Attention UNet, 320x320",
        "random init; train it",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        "res50_unet",
        "cnn",
        ResNet50UNet2D,
        "MONAI FlexibleUNet, ResNet50 encoder (ImageNet), 320x320",
        f"hub: {RESNET50_IMAGENET_REPO} (encoder, safetensors); decoder trained by you",
        preprocessing=dict(CNN_PREPROCESSING, channels=3, intensity="imagenet"),
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        "unet_ensemble",
        "cnn",
        UNetEnsemble2D,
        "several MONAI UNets (default 3) with averaged logits, 320x320",
        "random init; or pack trained UNets with models.ensemble.ensemble_of",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(MODEL_SPECS)}"
        ) from None


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (the embedded default is loaded by name 'default')."""
    return list(MODEL_SPECS)


def build_model(name: str, *, preprocessing: dict | None = None, **model_kwargs):
    """Build a registry model. ``model_kwargs`` override the spec's defaults (e.g.
    ``pretrained=False`` for random weights, ``backbone_config=`` for a tiny test backbone)."""
    from .checkpoint import LASegmenter

    return LASegmenter(model=name, model_kwargs=model_kwargs, preprocessing=preprocessing)


def count_parameters(name: str, **model_kwargs) -> int:
    """Parameter count of a registry model, built on the meta device (no memory, no download)."""
    import torch

    spec = get_spec(name)
    kwargs = {**spec.defaults, **model_kwargs}
    if "pretrained" in spec.builder.__init__.__code__.co_varnames:
        kwargs["pretrained"] = False
    with torch.device("meta"):
        net = spec.builder(**kwargs)
    return sum(p.numel() for p in net.parameters())
