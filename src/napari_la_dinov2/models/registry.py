"""The model zoo: names and aliases, one small factory (a network class) per variant.

``MODEL_SPECS`` maps a name to its :class:`ModelSpec`: the network's builder, its input
(:class:`~napari_la_dinov2.preprocess.Preprocessing`) and the paper's training defaults for its
family. ``ALIASES`` maps names that stand for shipped weights (``default``, the embedded model)
to the folder that holds them. Whether a model is trained is not the registry's business: it
comes from the model's provenance (:attr:`~.segmenter.LASegmenter.is_trained`).

This module imports only the networks; the segmenter, checkpoints and packing build on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from torch import nn

from ..preprocess import BranchInput, Preprocessing
from .baselines import RESNET50_IMAGENET_REPO, AttentionUNet2D, ResNet50UNet2D, UNet2D
from .dinov2 import DINOV2_ARCHITECTURES, DinoV2Segmenter, hub_repo_id
from .ensemble import UNetEnsemble2D

# Paper section "Training": Adam + BCEWithLogits, lr/epochs/batch per family, early stopping.
DINOV2_TRAINING = dict(lr=1e-3, epochs=35, batch_size=32)
CNN_TRAINING = dict(lr=1e-4, epochs=75, batch_size=24)
# DINOv2: 448x448, grey repeated to 3 channels, ImageNet normalisation, plain resize.
DINOV2_PREPROCESSING = Preprocessing(448, "imagenet", branches=(BranchInput(fit="stretch"),))
# Baselines: 320x320 after padding to a square (no distortion), z-score normalisation.
CNN_PREPROCESSING = Preprocessing(320, "zscore")
DEFAULT_MODEL_NAME = "default"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str
    weights: str
    preprocessing: Preprocessing
    defaults: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def accepts(self, argument: str) -> bool:
        """Whether the network's constructor takes ``argument`` (e.g. ``in_channels``)."""
        return argument in inspect.signature(self.builder).parameters


MODEL_SPECS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    MODEL_SPECS[spec.name] = spec


_SHORT = {"small": "s", "base": "b", "large": "l", "giant": "g"}
for _size in DINOV2_ARCHITECTURES:
    for _registers in (False, True):
        _register(
            ModelSpec(
                name=f"dinov2_vit{_SHORT[_size]}14" + ("_reg" if _registers else ""),
                family="dinov2",
                builder=DinoV2Segmenter,
                description=f"DINOv2 ViT-{_SHORT[_size].upper()}/14"
                + (" with registers" if _registers else "")
                + " + token head + conv decoder, 448x448",
                weights=f"hub: {hub_repo_id(_size, _registers)} (backbone); head trained by you",
                preprocessing=DINOV2_PREPROCESSING,
                defaults=dict(size=_size, registers=_registers),
                training=DINOV2_TRAINING,
            )
        )
_register(
    ModelSpec(
        name="unet",
        family="cnn",
        builder=UNet2D,
        description="MONAI UNet (2 residual units per level), 320x320",
        weights="random init; train it",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        name="attention_unet",
        family="cnn",
        builder=AttentionUNet2D,
        description="MONAI Attention UNet, 320x320",
        weights="random init; train it",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        name="res50_unet",
        family="cnn",
        builder=ResNet50UNet2D,
        description="MONAI FlexibleUNet, ResNet50 encoder (ImageNet), 320x320",
        weights=f"hub: {RESNET50_IMAGENET_REPO} (encoder, safetensors); decoder trained by you",
        preprocessing=Preprocessing(320, "imagenet"),
        training=CNN_TRAINING,
    )
)
_register(
    ModelSpec(
        name="unet_ensemble",
        family="cnn",
        builder=UNetEnsemble2D,
        description="several MONAI UNets (default 3) with averaged logits, 320x320",
        weights="random init; or pack trained UNets with models.packing.ensemble_of",
        preprocessing=CNN_PREPROCESSING,
        training=CNN_TRAINING,
    )
)


def default_checkpoint_dir() -> Path:
    """The embedded default model's folder, inside the installed package."""
    return Path(str(resources.files("napari_la_dinov2") / "weights" / "la_default"))


# Names that stand for weights shipped in the package: name -> folder (a callable, so that
# the package's location is looked up when needed).
ALIASES: dict[str, Callable[[], Path]] = {DEFAULT_MODEL_NAME: default_checkpoint_dir}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(MODEL_SPECS)}"
        ) from None


def list_models() -> list[str]:
    """Registry names (untrained heads) accepted by ``build_model``; see also ``ALIASES``."""
    return list(MODEL_SPECS)


def count_parameters(name: str, **model_kwargs) -> int:
    """Parameter count of a registry network, built on the meta device (no memory, no
    download)."""
    import torch

    spec = get_spec(name)
    kwargs = {**spec.defaults, **model_kwargs}
    if spec.accepts("pretrained"):
        kwargs["pretrained"] = False
    with torch.device("meta"):
        net = spec.builder(**kwargs)
    return sum(p.numel() for p in net.parameters())
