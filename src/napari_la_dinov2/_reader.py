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

A folder dropped on napari goes to the reader its preferences name, else napari asks (its own
reader accepts every folder too, in pixels): ``activate`` names this reader for folders once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError
from .volume_files import case_name, is_supported_path, read_labels_with_meta, read_volume

PLUGIN = "napari-la-dinov2"
# napari matches its reader preferences against a folder's real path plus a separator, so this
# pattern names every folder; a preference saved for one folder (its full path) still wins.
EVERY_FOLDER = "*" + os.sep
# Beside napari's settings file once the preference was set: a user who removes it keeps it removed.
PREFERENCE_SET_MARK = "napari-la-dinov2-folder-preference-set"

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


def prefer_this_reader_for_folders(settings) -> bool:
    """Name this reader for folders in napari's reader preferences (``extension2reader``), so a
    DICOM series folder dropped on napari or opened with File > Open Folder comes in mm, not in
    napari's pixels. Only once, and only where the user named no reader for every folder (or
    for everything); True if it was set. A folder that holds no DICOM series then gets napari's
    own dialog, with the other readers, after this one says no."""
    preferences = settings.plugins.extension2reader
    if EVERY_FOLDER in preferences or "*" in preferences:
        return False
    config = getattr(settings, "config_path", None)
    mark = Path(config).with_name(PREFERENCE_SET_MARK) if config else None
    if mark is not None and mark.exists():
        return False  # set before and removed since, in Preferences: the user's choice stands
    settings.plugins.extension2reader = {**preferences, EVERY_FOLDER: PLUGIN}
    if mark is not None:
        try:
            mark.touch()
        except OSError:  # a read-only settings folder: the preference is set, the mark is not
            pass
    return True


def activate(_context=None) -> None:
    """npe2 ``on_activate``: run when napari first uses one of this plugin's commands."""
    try:
        from napari.settings import get_settings

        prefer_this_reader_for_folders(get_settings())
    except Exception as error:  # settings napari cannot save must not stop the plugin loading
        warnings.warn(f"{PLUGIN} could not set its folder reader preference: {error}", stacklevel=2)
