"""Voxel grids in millimetres: the grid a model was trained at, and resampling a volume.

Sizes are given in the **acquisition's order**, ``(in-plane 1, in-plane 2, through-plane)``:
the two in-plane array axes in their array order, then the through-plane (slice) axis. This
does not depend on the order a file stores its axes in (the same convention as a model's
``preprocessing.views``), so a model trained on (x, y, z) files applies to (z, y, x) ones.

A model records where it was trained in ``provenance["training_grid"]``::

    {"spacing_mm": [0.625, 0.625, 1.25], "field_of_view_mm": [119.4, 88.8, 110.0],
     "cases": 64}

the median voxel size and extent per axis over its training cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only a type here: grid stays a leaf module that inference can import
    from .volume import VolumeMeta

# A model that does not record its training grid (trained before it was recorded, or built from
# the registry untrained) is assumed to expect the LA 2018 crops every model here is trained on:
# the embedded default model's median field of view, rounded up to whole millimetres.
FALLBACK_FIELD_OF_VIEW_MM = (120.0, 90.0, 110.0)


def acquisition_axes(slice_axis: int) -> tuple[int, int, int]:
    """Array axes in the acquisition's order: (in-plane 1, in-plane 2, through-plane)."""
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, not {slice_axis}")
    in_plane = [axis for axis in range(3) if axis != slice_axis]
    return (in_plane[0], in_plane[1], slice_axis)


def grid_of(meta: VolumeMeta, slice_axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(voxel size, extent) in mm of one volume, in the acquisition's order."""
    axes = acquisition_axes(meta.through_plane_axis() if slice_axis is None else slice_axis)
    spacing = np.asarray(meta.spacing)[list(axes)]
    return spacing, spacing * np.asarray(meta.shape)[list(axes)]


def training_grid(metas: Iterable[VolumeMeta]) -> dict:
    """``provenance["training_grid"]`` of a model trained on volumes of these metas."""
    grids = [grid_of(meta) for meta in metas]
    if not grids:
        raise ValueError("no training volumes to take a grid from")
    spacing = np.median([g[0] for g in grids], axis=0)
    extent = np.median([g[1] for g in grids], axis=0)
    return {
        "spacing_mm": [round(float(v), 4) for v in spacing],
        "field_of_view_mm": [round(float(v), 1) for v in extent],
        "cases": len(grids),
    }


def field_of_view_mm(provenance: Mapping) -> tuple[tuple[float, float, float], bool]:
    """The model's training field of view in mm (acquisition order), and whether the model
    recorded it (``False``: :data:`FALLBACK_FIELD_OF_VIEW_MM`)."""
    recorded = (provenance.get("training_grid") or {}).get("field_of_view_mm")
    if recorded is None:
        return FALLBACK_FIELD_OF_VIEW_MM, False
    return tuple(float(v) for v in recorded), True


def fallback_note(display_name: str) -> str:
    """What the command line and the widget say when a model's field of view is not recorded."""
    extent = " x ".join(f"{v:g}" for v in FALLBACK_FIELD_OF_VIEW_MM)
    return (
        f"{display_name} does not record its training field of view; using {extent} mm "
        "(the LA 2018 crops)."
    )


def describe(provenance: Mapping) -> str:
    """'0.625x0.625x1.25 / 119x89x110' (voxel / field of view in mm), '-' if not recorded."""
    grid = provenance.get("training_grid")
    if not grid:
        return "-"
    spacing = "x".join(f"{v:g}" for v in grid["spacing_mm"])
    extent = "x".join(f"{v:.0f}" for v in grid["field_of_view_mm"])
    return f"{spacing} / {extent}"


def resample(array: np.ndarray, affine, spacing_mm, *, order: int = 1):
    """``(array, affine)`` resampled to about ``spacing_mm`` per **array** axis over the same
    field of view (scipy.ndimage.zoom, spline ``order``; 0 = nearest), its voxel -> RAS affine
    updated.

    The number of voxels along an axis is rounded, so the exact new spacing is the field of view
    over that number; it is what the returned affine says. ``grid_mode`` makes the outer voxel
    edges, not the outer voxel centres, line up: the volume covers the same millimetres.
    """
    from scipy import ndimage

    affine = np.asarray(affine, dtype=float)
    old_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    extent = old_spacing * np.asarray(array.shape)
    new_shape = np.maximum(1, np.round(extent / np.asarray(spacing_mm, float))).astype(int)
    zoom = new_shape / np.asarray(array.shape)
    out = ndimage.zoom(
        np.asarray(array, dtype=np.float32), zoom, order=order, grid_mode=True, mode="nearest"
    )
    # New voxel j sits at old voxel coordinate (j + 0.5) / zoom - 0.5.
    step = np.diag([*(1.0 / zoom), 1.0])
    step[:3, 3] = 0.5 / zoom - 0.5
    return out, affine @ step
