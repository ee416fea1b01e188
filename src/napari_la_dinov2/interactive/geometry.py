"""Where a click acts: its window in the volume, and its crop of each view's model input.

A click may change the mask only inside its window, a box of ``window_mm`` on either side of
it along each axis (in voxels of the volume's own spacing). Each view recomputes only its
slices that cross the window, and on each slice the network runs on a crop of the model's
``S x S`` input centred on the click (shifted inside the input near its edges), large enough
that the window lies well inside it. Training cuts its samples with the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..preprocess import IntensityStats, SliceTransform


def window_index(
    position: Sequence[int], shape: Sequence[int], spacing: Sequence[float], window_mm: float
) -> tuple[slice, slice, slice]:
    """The box of voxels within ``window_mm`` of ``position`` along each axis, clipped."""
    index = []
    for p, n, mm in zip(position, shape, spacing, strict=True):
        half = max(1, int(np.ceil(window_mm / float(mm))))
        index.append(slice(max(0, int(p) - half), min(int(n), int(p) + half + 1)))
    return tuple(index)


def to_input(transform: SliceTransform, height: int, width: int, row: float, col: float):
    """Where voxel (``row``, ``col``) of an ``height x width`` slice lands in the model's
    input (pixel centres, as the pad-or-stretch and the resize of :class:`SliceTransform`)."""
    size = transform.size
    if transform.fit == "stretch":
        return (row + 0.5) * size / height - 0.5, (col + 0.5) * size / width - 0.5
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return (row + top + 0.5) * size / side - 0.5, (col + left + 0.5) * size / side - 0.5


def crop_start(center: float, size: int, crop: int) -> int:
    """First pixel of a ``crop``-wide crop centred on ``center`` and inside ``0..size``."""
    return int(np.clip(round(center) - crop // 2, 0, max(0, size - crop)))


def network_inputs(
    transform: SliceTransform,
    stats: IntensityStats,
    image_rows: torch.Tensor,
    prompts: torch.Tensor,
) -> torch.Tensor:
    """``BxKxHxW`` raw image slices (with their neighbours) and ``Bx3xHxW`` prompts (mask,
    positive and negative maps, in [0, 1]) -> the ``Bx(C+3)xSxS`` input of a click network."""
    image = transform.prepare(image_rows, stats)
    return torch.cat([image, transform.fit_maps(prompts)], dim=1)
