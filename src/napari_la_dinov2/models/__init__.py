"""Model zoo: DINOv2 ViT-S/B/L/g /14 with the paper's head, and MONAI baselines."""

from .checkpoint import (
    DEFAULT_MODEL_NAME,
    LASegmenter,
    default_checkpoint_dir,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from .registry import MODEL_SPECS, build_model, count_parameters, get_spec, list_models

__all__ = [
    "DEFAULT_MODEL_NAME",
    "LASegmenter",
    "MODEL_SPECS",
    "build_model",
    "count_parameters",
    "default_checkpoint_dir",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
