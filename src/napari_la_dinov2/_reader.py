"""npe2 reader: .nii, .nii.gz and .nrrd volumes as Image layers in physical space.

The file is read once, in ``napari_get_reader``: a file that cannot be read gives ``None`` (napari
then tries other readers) and a warning that says why, never an exception.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .errors import InputError
from .io import is_supported_path, read_volume


def _layer_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def napari_get_reader(path):
    """A function returning the layers of ``path`` (a path or a list of paths), or None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    layers = []
    for one in paths:
        try:
            volume, meta = read_volume(one)
        except InputError as error:
            warnings.warn(str(error), stacklevel=2)
            return None
        except Exception as error:  # a reader must never raise into napari
            warnings.warn(
                f"{one} could not be read ({type(error).__name__}: {error}).", stacklevel=2
            )
            return None
        from ._widgets._layers import image_layer_kwargs

        kwargs = image_layer_kwargs(meta, name=_layer_name(str(one)))
        kwargs["colormap"] = "gray"
        layers.append((volume, kwargs, "image"))
    return lambda _path: layers
