"""Left-atrium segmentation of 3D LGE cardiac MRI: DINOv2 and CNN baselines, napari plugin.

The engine (io, models, inference, training, metrics) runs headless; the napari adapters in
``_reader``, ``_writer``, ``_sample_data`` and ``_widgets`` are thin layers over it.
"""

from ._version import __version__
from .errors import CancelledError, InputError
from .inference import Predictor, RegionOfInterest
from .io import VolumeMeta, read_labels, read_volume, write_labels
from .models import build_model, list_models, load_model, save_checkpoint

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
