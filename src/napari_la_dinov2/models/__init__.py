"""Model zoo: DINOv2 ViT-S/B/L/g /14 with the paper's head, and MONAI baselines.

Layers, each importing only those above it: networks (baselines, dinov2, ensemble) ->
registry (names and aliases) -> segmenter (LASegmenter, its branches) -> checkpoint (save,
load, hub) -> packing (ensemble_of).
"""

from .checkpoint import load_checkpoint, load_model, push_to_hub, save_checkpoint
from .registry import (
    ALIASES,
    DEFAULT_MODEL_NAME,
    MODEL_SPECS,
    count_parameters,
    default_checkpoint_dir,
    get_spec,
    list_models,
)
from .segmenter import Branch, LASegmenter, build_model

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL_NAME",
    "MODEL_SPECS",
    "Branch",
    "LASegmenter",
    "build_model",
    "count_parameters",
    "default_checkpoint_dir",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_model",
    "push_to_hub",
    "save_checkpoint",
]
