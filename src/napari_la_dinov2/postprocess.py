"""Mask clean-up after thresholding: morphological opening + closing, largest 3D component.

Operates on a boolean ``ZxYxX``-agnostic 3D array; each step can be switched off. The opening
and closing work slice by slice in the plane the model saw (slices are predicted
independently, so through-plane smoothing would blur across real anatomy at 1.25 mm+ steps).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_DISK = ndimage.generate_binary_structure(2, 1)


def morphological_clean(mask: np.ndarray, slice_axis: int, iterations: int = 1) -> np.ndarray:
    """In-plane opening then closing (3x3 cross), slice by slice along ``slice_axis``."""
    structure = np.expand_dims(_DISK, axis=slice_axis)
    opened = ndimage.binary_opening(mask, structure=structure, iterations=iterations)
    return ndimage.binary_closing(
        opened, structure=structure, iterations=iterations, border_value=0
    )


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component (the atrium); drop islands."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def postprocess(
    mask: np.ndarray, slice_axis: int, *, morphology: bool = True, largest_cc: bool = True
) -> np.ndarray:
    mask = mask.astype(bool)
    if morphology:
        mask = morphological_clean(mask, slice_axis)
    if largest_cc:
        mask = largest_component(mask)
    return mask
