"""Left-atrium segmentation of 3D LGE cardiac MRI: DINOv2 and CNN baselines, napari plugin.

The engine (volume files, models, inference, training, scoring) runs headless; the napari adapters
in ``_reader``, ``_writer``, ``_sample_data`` and ``_widgets`` are thin layers over it.

The names that need torch (the Predictor, the models) are imported on first use: napari imports
this package to find the reader and the widgets, and the command line to parse its arguments,
and neither should pay for torch, scipy and huggingface_hub before it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import CancelledError, InputError
from .volume_files import VolumeMeta, read_labels, read_volume, write_labels

# Public name -> the submodule it comes from, imported when the name is first used.
_LAZY = {
    "Predictor": "inference",
    "RegionOfInterest": "inference",
    "build_model": "models",
    "list_models": "models",
    "load_model": "models",
    "save_checkpoint": "models",
}

if TYPE_CHECKING:
    from .inference import Predictor, RegionOfInterest
    from .models import build_model, list_models, load_model, save_checkpoint


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "__version__",
    "CancelledError",
    "InputError",
    "Predictor",
    "RegionOfInterest",
    "VolumeMeta",
    "build_model",
    "list_models",
    "load_model",
    "read_labels",
    "read_volume",
    "save_checkpoint",
    "write_labels",
]
