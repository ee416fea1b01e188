"""What the Compare widget computes and names, without Qt: the worst slice of two masks, each
mask's shape measures, layer names and colours."""

from __future__ import annotations

import math

import numpy as np

from ._colours import DISAGREE_COLOUR_NAME

# A slice's atrium must cover at least this (the union of the two masks, in mm²) and at least
# this share of the largest slice's to be a candidate: a 1 cm blob at the atrium's edge, where
# any two masks differ, is not where a model does worst.
MIN_SLICE_AREA_MM2 = 100.0
MIN_SLICE_SHARE = 0.1
DECIMALS = {"hd95_mm": 2, "assd_mm": 2, "volume_ml_pred": 1, "surface_area_cm2": 1}  # else 3


def worst_slice(a: np.ndarray, b: np.ndarray, slice_axis: int, spacing=None) -> int:
    """The slice (along ``slice_axis``) where ``a`` and ``b`` differ most relative to the
    atrium's size there (the lowest Dice), among the slices whose atrium (either mask) covers at
    least ``MIN_SLICE_AREA_MM2`` and ``MIN_SLICE_SHARE`` of the largest slice's (or the largest
    one itself). ``spacing``: voxel sizes in mm (1 mm where not given). The middle slice when
    neither mask has any atrium."""
    a, b = np.moveaxis(a != 0, slice_axis, 0), np.moveaxis(b != 0, slice_axis, 0)
    n = a.shape[0]
    if spacing is None:
        pixel_mm2 = 1.0
    else:
        in_plane = [float(s) for axis, s in enumerate(spacing[:3]) if axis != slice_axis]
        pixel_mm2 = in_plane[0] * in_plane[1]
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    both = (a2 & b2).sum(1)
    size = a2.sum(1) + b2.sum(1)
    union_mm2 = (a2 | b2).sum(1) * pixel_mm2
    if not union_mm2.any():
        return n // 2
    largest = union_mm2.max()
    needed = min(largest, max(MIN_SLICE_AREA_MM2, MIN_SLICE_SHARE * largest))
    candidates = np.flatnonzero(union_mm2 >= needed)
    dices = 2 * both[candidates] / np.maximum(size[candidates], 1)
    return int(candidates[np.argmin(dices)])


def shape_measures(measures: dict) -> dict[str, dict[str, float]]:
    """The table's surface area (cm²) and sphericity of each model's mask, from the engine's
    measures (None for an empty mask: NaN), so the table agrees with ``la-dinov2 mesh``."""
    return {
        name: {
            "surface_area_cm2": found.surface_area_cm2 if found else math.nan,
            "sphericity": found.sphericity if found else math.nan,
        }
        for name, found in measures.items()
    }


def model_layer_name(case: str, model: str) -> str:
    """Not Segment's "<case> LA (<model>)": a comparison beside a segmentation by the same
    model would otherwise be a second layer of that name, told apart only by a "#2". The model
    last: napari's layer list elides a long name in the middle, so its end stays in sight."""
    return f"{case} LA compared: {model}"


def disagreement_layer_name(case: str) -> str:
    return f"{case}: models disagree ({DISAGREE_COLOUR_NAME})"


def viewer_grid(viewer):
    """napari's grid settings: ``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def format_value(value, decimals: int = 3) -> str:
    """A table cell: floats to ``decimals`` places, NaN as n/a."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return "inf" if math.isinf(value) else f"{value:.{decimals}f}"
    return str(value)
