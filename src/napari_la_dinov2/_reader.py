"""npe2 reader: .nii, .nii.gz and .nrrd volumes as layers shown in their acquisition plane.

The file is read once, in ``napari_get_reader``, through ``io.read_volume``. A path that is not
ours (another suffix) gives ``None`` (napari tries other readers). A file of ours that cannot be
read (a text file renamed .nii.gz, a 2D NIfTI) gives a read function that raises our one
sentence: napari shows it, instead of its generic "the reader refused the file";
``napari_get_reader`` itself never raises. The layer shows the volume through ``display.to_display``: the through-plane axis is
the layer's first axis (the slider), the slice is on the canvas in mm as radiologists read it,
with anatomical axis labels; the file's meta and the display geometry ride in the metadata, so
the writer and the widgets give the engine the file's own voxel order back. A mask file (whole
numbers, few distinct values) opens as a Labels layer, not as a grey image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import InputError
from .volume_files import case_name, is_supported_path, read_labels_with_meta, read_volume

# More distinct values than this is an image: a label map has a handful (LA 2018: 0 and 1;
# whole-heart sets: 8); an 8-bit LGE image has a hundred or more.
MAX_LABEL_VALUES = 16


def label_values(volume: np.ndarray) -> np.ndarray | None:
    """The distinct values of a label map (whole numbers, at most MAX_LABEL_VALUES of them),
    or None for an image. A strided sample rules most images out before the full count."""
    sample = volume.ravel()[:: max(1, volume.size // 50_000)]
    if np.unique(sample).size > MAX_LABEL_VALUES:
        return None
    values = np.unique(volume)
    if values.size > MAX_LABEL_VALUES or not np.array_equal(values, np.round(values)):
        return None
    return values


def _as_labels(volume: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Integer labels (napari's Labels need an integer dtype): uint8 when they fit."""
    fits = values.min() >= 0 and values.max() <= 255
    return volume.astype(np.uint8 if fits else np.int32)


def _empty_mask(path: str):
    """``(mask, meta)`` of an integer label file that read_volume refuses because every voxel
    has the same value (an empty mask is a valid start for drawing), else None."""
    try:
        volume, meta = read_labels_with_meta(path)
    except Exception:  # not readable as a mask either: read_volume's reason is the one to give
        return None
    if not np.issubdtype(volume.dtype, np.integer) or label_values(volume) is None:
        return None
    return volume, meta


def _read_layer(path: str):
    """``(data, kwargs, layer type)`` of one file, in the display order."""
    from ._layer_geometry import display_layer

    try:
        volume, meta = read_volume(path)
    except InputError:
        empty = _empty_mask(path)
        if empty is None:
            raise
        volume, meta = empty
    for note in meta.extra.get("read_warnings", ()):  # DICOM files skipped: napari shows each
        warnings.warn(f"{path}: {note}", stacklevel=3)
    values = label_values(volume)
    layer_type = "image" if values is None else "labels"
    if values is not None:
        volume = _as_labels(volume, values)
    data, kwargs = display_layer(volume, meta, name=case_name(path))
    if layer_type == "image":
        kwargs["colormap"] = "gray"
    else:
        kwargs["opacity"] = 0.5
    return data, kwargs, layer_type


def _refusal(sentence: str):
    """A read function that tells napari, and so the user, why the file cannot be opened."""

    def refuse(_path, **_kwargs):
        raise InputError(sentence)

    return refuse


def napari_get_reader(path):
    """A function returning the layers of ``path`` (a path or a list of paths), or None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    layers = []
    for one in paths:
        try:
            layers.append(_read_layer(str(one)))
        except InputError as error:
            return _refusal(str(error))
        except Exception as error:  # a reader must never raise into napari's plugin search
            return _refusal(
                f"{one} could not be read ({type(error).__name__}: {error}); it is not a "
                "NIfTI, NRRD or DICOM volume this plugin can open."
            )
    return lambda _path: layers
