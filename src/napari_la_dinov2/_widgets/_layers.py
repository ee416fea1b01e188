"""Layer <-> (array, VolumeMeta) conversion: how a volume sits in napari's physical space.

napari maps data to world as ``world = affine @ (scale * data + translate)``. A volume's
affine is ``direction @ diag(spacing)`` plus an origin, so the layer gets ``scale = spacing``,
``translate = origin`` and, only when the direction is not the identity (flipped or oblique
axes), an ``affine`` that turns about the origin. Every layer made from one volume shares these
three, so a mask drawn on the image is on its voxels. No Qt here: the reader and writer use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..io import VolumeMeta

META_KEY = "la_dinov2_meta"
SOURCE_KEY = "la_dinov2_source"


def layer_geometry(meta: VolumeMeta) -> dict[str, Any]:
    """``scale``, ``translate`` (and ``affine`` when needed) for a layer showing ``meta``'s grid."""
    spacing = np.asarray(meta.spacing, dtype=float)
    origin = np.asarray(meta.affine[:3, 3], dtype=float)
    direction = meta.affine[:3, :3] / spacing
    geometry: dict[str, Any] = {"scale": tuple(spacing), "translate": tuple(origin)}
    if not np.allclose(direction, np.eye(3), atol=1e-6):
        # Rotate/flip about the origin: world = D (x - o) + o for physical point x.
        turn = np.eye(4)
        turn[:3, :3] = direction
        turn[:3, 3] = origin - direction @ origin
        geometry["affine"] = turn
    return geometry


def image_layer_kwargs(meta: VolumeMeta, name: str | None = None) -> dict[str, Any]:
    """Keyword arguments of an Image layer for a volume read from ``meta.source``."""
    kwargs = {**layer_geometry(meta), "metadata": {META_KEY: meta, SOURCE_KEY: meta.source}}
    if name is not None:
        kwargs["name"] = name
    return kwargs


def meta_from_state(
    shape, scale, translate, affine=None, metadata: dict | None = None
) -> VolumeMeta:
    """The VolumeMeta of a layer: the one it carries, else rebuilt from its transforms."""
    stored = (metadata or {}).get(META_KEY)
    if isinstance(stored, VolumeMeta) and tuple(stored.shape) == tuple(shape):
        return stored
    scale = np.asarray(scale, dtype=float)[-3:]
    translate = np.asarray(translate, dtype=float)[-3:]
    turn = np.eye(4) if affine is None else np.asarray(affine, dtype=float)[-4:, -4:]
    voxel_to_physical = np.eye(4)
    voxel_to_physical[:3, :3] = np.diag(scale)
    voxel_to_physical[:3, 3] = translate
    return VolumeMeta(
        affine=turn @ voxel_to_physical, shape=tuple(int(s) for s in shape), format="nifti"
    )


def layer_volume(layer) -> tuple[np.ndarray, VolumeMeta]:
    """(3D numpy array, meta) of an Image or Labels layer; InputError if it is not a 3D volume."""
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False):
        raise InputError(f"layer '{layer.name}' is RGB or multiscale; a grey 3D volume is needed.")
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise InputError(
            f"layer '{layer.name}' has {data.ndim} dimensions (shape {data.shape}); "
            "a 3D volume is needed."
        )
    meta = meta_from_state(
        data.shape, layer.scale, layer.translate, layer.affine.affine_matrix, layer.metadata
    )
    return data, meta


def labels_layer_kwargs(image_layer, name: str) -> dict[str, Any]:
    """A Labels layer on exactly the grid of ``image_layer`` (same transforms, same meta)."""
    return {
        "name": name,
        "scale": tuple(image_layer.scale),
        "translate": tuple(image_layer.translate),
        "affine": image_layer.affine.affine_matrix.copy(),
        "metadata": dict(image_layer.metadata),
    }


def slice_view_order(slice_axis: int, ndim: int = 3) -> tuple[int, ...]:
    """A dims order with the slice axis on the slider and the other two shown with the first
    array axis (x) across and the second (y) down, the usual way an axial slice is drawn."""
    axis = ndim - 3 + slice_axis
    first, second = [ndim - 3 + a for a in range(3) if a != slice_axis]
    return (*range(ndim - 3), axis, second, first)
