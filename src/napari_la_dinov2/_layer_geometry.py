"""Layer <-> (array, VolumeMeta) conversion: how a volume sits in napari's physical space.

napari maps data to world as ``world = affine @ (scale * data + translate)``. A volume's
affine is ``direction @ diag(spacing)`` plus an origin, so the layer gets ``scale = spacing``,
``translate = origin`` and, only when the direction is not the identity (flipped or oblique
axes), an ``affine`` that turns about the origin. Every layer made from one volume shares these
three, so a mask drawn on the image is on its voxels. No napari or Qt import here: the reader,
the writer, the launcher and the widgets all use it, so it sits beside ``_reader.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .display import (
    DisplayGeometry,
    display_to_file_index,
    display_view,
    file_to_display_index,
    from_display,
    layer_transforms,
    to_display,
    world_from_ras_of_labels,
)
from .errors import InputError
from .volume_files import VolumeMeta

META_KEY = "la_dinov2_meta"
SOURCE_KEY = "la_dinov2_source"
GEOMETRY_KEY = "la_dinov2_display"  # the DisplayGeometry of a layer made by display_layer
# A Labels layer made by Segment keeps the model's own mask (file order) here: the user's brush
# changes layer.data, not this, so fine-tuning can tell the corrected slices from the rest.
PREDICTION_KEY = "la_dinov2_prediction"
MODEL_KEY = "la_dinov2_model"  # ... and the model source that made it


def layer_geometry(meta: VolumeMeta) -> dict[str, Any]:
    """``scale``, ``translate`` (and ``affine`` when needed) for a layer showing ``meta``'s grid
    in the file's own voxel order (the display conversion is in ``display_layer``)."""
    return layer_transforms(meta.affine)


def image_layer_kwargs(meta: VolumeMeta, name: str | None = None) -> dict[str, Any]:
    """Keyword arguments of an Image layer for a volume read from ``meta.source``."""
    kwargs = {**layer_geometry(meta), "metadata": {META_KEY: meta, SOURCE_KEY: meta.source}}
    if name is not None:
        kwargs["name"] = name
    return kwargs


def display_layer(
    array: np.ndarray, meta: VolumeMeta, name: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(data, kwargs)`` of a layer showing a file-order volume in its acquisition plane:
    slices on the slider, the plane on the canvas in mm, anatomical axis labels, and the
    file's meta and the DisplayGeometry in the metadata (to convert back on the way out)."""
    data, geometry = to_display(array, meta)
    kwargs = {
        **geometry.layer_transforms(),
        "axis_labels": geometry.axis_labels,
        "units": ("mm", "mm", "mm"),
        "metadata": {META_KEY: meta, SOURCE_KEY: meta.source, GEOMETRY_KEY: geometry},
    }
    if name is not None:
        kwargs["name"] = name
    return data, kwargs


def layer_display_geometry(layer, shape=None) -> DisplayGeometry | None:
    """The DisplayGeometry of ``layer`` when its data (or ``shape``) is on that display grid."""
    geometry = (getattr(layer, "metadata", None) or {}).get(GEOMETRY_KEY)
    shape = tuple(np.shape(layer.data) if shape is None else shape)
    if isinstance(geometry, DisplayGeometry) and geometry.display_shape == shape:
        return geometry
    return None


def meta_from_state(
    shape, scale, translate, affine=None, metadata: dict | None = None, axis_labels=None
) -> VolumeMeta:
    """The VolumeMeta of a layer: the one it carries, else rebuilt from its transforms.

    A layer that names this plugin's display axes (napari's New Labels copies them from the
    image, not its metadata) lives in an anatomical world frame, turned back into RAS here.
    """
    stored = (metadata or {}).get(META_KEY)
    if isinstance(stored, VolumeMeta) and tuple(stored.shape) == tuple(shape):
        return stored
    scale = np.asarray(scale, dtype=float)[-3:]
    translate = np.asarray(translate, dtype=float)[-3:]
    turn = np.eye(4) if affine is None else np.asarray(affine, dtype=float)[-4:, -4:]
    voxel_to_physical = np.eye(4)
    voxel_to_physical[:3, :3] = np.diag(scale)
    voxel_to_physical[:3, 3] = translate
    world_from_ras = world_from_ras_of_labels(axis_labels)
    ras_from_world = np.eye(4)
    if world_from_ras is not None:
        ras_from_world[:3, :3] = world_from_ras.T  # a signed permutation: inverse = transpose
    return VolumeMeta(
        affine=ras_from_world @ turn @ voxel_to_physical,
        shape=tuple(int(s) for s in shape),
        format="nifti",
    )


def _refuse_dicom_in_pixels(layer) -> None:
    """napari's own reader opens a DICOM folder in pixels, with no spacing or orientation: a mask
    and volumes in mL made on that grid would be wrong, so the user is told how to reopen it."""
    source = getattr(layer, "source", None)
    folder = getattr(source, "path", None)
    if getattr(source, "reader_plugin", None) != "napari" or not folder:
        return
    from .dicom import looks_like_dicom

    if Path(folder).is_dir() and looks_like_dicom(folder):
        raise InputError(
            f"layer '{layer.name}' was opened by napari's own reader, which drops the DICOM "
            f"spacing and orientation; open {folder} again with File > Open Folder and choose "
            "LA DINOv2."
        )


def layer_volume(layer) -> tuple[np.ndarray, VolumeMeta]:
    """(3D numpy array in the file's voxel order, meta) of an Image or Labels layer; InputError
    if it is not a 3D volume. A layer shown through ``display_layer`` is turned back."""
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False):
        raise InputError(f"layer '{layer.name}' is RGB or multiscale; a grey 3D volume is needed.")
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise InputError(
            f"layer '{layer.name}' has {data.ndim} dimensions (shape {data.shape}); "
            "a 3D volume is needed."
        )
    geometry = layer_display_geometry(layer)
    if geometry is not None:
        return from_display(data, geometry), layer.metadata[META_KEY]
    _refuse_dicom_in_pixels(layer)
    meta = meta_from_state(
        data.shape,
        layer.scale,
        layer.translate,
        layer.affine.affine_matrix,
        layer.metadata,
        getattr(layer, "axis_labels", None),
    )
    return data, meta


def mask_of(labels_layer, image_layer) -> np.ndarray:
    """A mask layer's data in its image's file voxel order: by the mask's own DisplayGeometry,
    else the image's when the mask is on the image's display grid (New Labels, a copy)."""
    data = np.asarray(labels_layer.data)
    geometry = layer_display_geometry(labels_layer) or layer_display_geometry(
        image_layer, data.shape
    )
    return data if geometry is None else from_display(data, geometry)


def on_layer_grid(image_layer, array: np.ndarray) -> np.ndarray:
    """A file-order result (a mask) as it must be shown over ``image_layer``."""
    geometry = layer_display_geometry(image_layer)
    return array if geometry is None else display_view(array, geometry)


def layer_to_file_index(layer, points) -> np.ndarray:
    """File voxel indices of a layer's data coordinates (unchanged for a file-order layer)."""
    geometry = layer_display_geometry(layer)
    return (
        np.asarray(points, float) if geometry is None else display_to_file_index(points, geometry)
    )


def file_to_layer_index(layer, points) -> np.ndarray:
    """A layer's data coordinates of file voxel indices (the inverse of the above)."""
    geometry = layer_display_geometry(layer)
    return (
        np.asarray(points, float) if geometry is None else file_to_display_index(points, geometry)
    )


def unique_name(name: str, taken) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when ``taken`` holds it already: the one
    convention of the docks for layer, model and case names (napari's own ``name [1]`` says
    nothing of what repeats)."""
    taken, found, n = set(taken), name, 2
    while found in taken:
        found, n = f"{name} ({n})", n + 1
    return found


def unique_layer_name(viewer, name: str) -> str:
    """``name``, made unique among the viewer's layers (see :func:`unique_name`)."""
    return unique_name(name, (layer.name for layer in viewer.layers))


def file_shape_of(layer) -> tuple[int, ...]:
    """The file-order shape of the volume ``layer`` shows."""
    geometry = layer_display_geometry(layer)
    return tuple(np.shape(layer.data)) if geometry is None else tuple(geometry.file_shape)


def show_file_slice(viewer, layer, slice_axis: int, index: int) -> int:
    """Move the viewer's sliders to file slice ``index`` along file axis ``slice_axis`` of the
    volume ``layer`` shows (file index -> layer data -> world); returns the slider position."""
    point = (np.asarray(file_shape_of(layer), float) - 1) / 2
    point[slice_axis] = index
    data = file_to_layer_index(layer, point[None])[0]
    world = np.asarray(layer.data_to_world(data), dtype=float)
    offset = viewer.dims.ndim - world.size
    for axis in viewer.dims.not_displayed:
        if axis >= offset:
            viewer.dims.set_point(axis, world[axis - offset])
    sliders = [a for a in viewer.dims.not_displayed if a >= offset]
    return int(viewer.dims.current_step[sliders[-1]]) if sliders else int(index)


def labels_layer_kwargs(image_layer, name: str) -> dict[str, Any]:
    """A Labels layer on exactly the grid of ``image_layer`` (same transforms, same meta)."""
    return {
        "name": name,
        "scale": tuple(image_layer.scale),
        "translate": tuple(image_layer.translate),
        "affine": image_layer.affine.affine_matrix.copy(),
        "axis_labels": tuple(image_layer.axis_labels),
        "units": tuple(str(u) for u in image_layer.units),
        "metadata": dict(image_layer.metadata),
    }


def slice_view_order(slice_axis: int, ndim: int = 3) -> tuple[int, ...]:
    """A dims order with the slice axis on the slider and the other two shown with the first
    array axis (x) across and the second (y) down, the usual way an axial slice is drawn."""
    axis = ndim - 3 + slice_axis
    first, second = [ndim - 3 + a for a in range(3) if a != slice_axis]
    return (*range(ndim - 3), axis, second, first)


def layer_view_order(layer, slice_axis: int, ndim: int = 3) -> tuple[int, ...]:
    """The dims order that puts file axis ``slice_axis`` on the slider: napari's default for a
    layer shown through ``display_layer`` when it is the layer's first axis."""
    geometry = layer_display_geometry(layer)
    if geometry is None:
        return slice_view_order(slice_axis, ndim)
    if geometry.axes[0] == slice_axis:
        return tuple(range(ndim))
    return slice_view_order(geometry.axes.index(slice_axis), ndim)


def data_to_world_matrix(layer) -> np.ndarray:
    """napari's data -> world map of a 3D ``layer`` as a 4x4 matrix, to move many points at once.

    The map is affine, so it is read off the images of the origin and of the unit vectors under
    the layer's own ``data_to_world`` (whatever its scale, translate, rotate, shear and affine).
    """
    origin = np.asarray(layer.data_to_world(np.zeros(3)), dtype=float)
    matrix = np.eye(4)
    matrix[:3, 3] = origin
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    return matrix


def scanner_to_world(layer, points, meta: VolumeMeta, *, ras: bool = False) -> np.ndarray:
    """World coordinates, in ``layer``'s frame, of scanner-mm ``points`` (N x 3; LPS as
    ``mesh.mesh_from_mask`` gives them, or RAS with ``ras``) of the volume ``meta`` describes,
    ``layer`` showing that volume (in the file's order or through ``display_layer``)."""
    points = np.asarray(points, dtype=float)
    ras_points = points if ras else points * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    affine = np.asarray(meta.affine, dtype=float)
    file_index = np.linalg.solve(affine[:3, :3], (ras_points - affine[:3, 3]).T).T
    data_index = file_to_layer_index(layer, file_index)
    matrix = data_to_world_matrix(layer)
    return data_index @ matrix[:3, :3].T + matrix[:3, 3]
