"""Where a click acts: its window in the volume, and its crop of each view's model input.

A click may change the mask only inside its window, a box of ``window_mm`` on either side of
it along each axis (in voxels of the volume's own spacing). Each view recomputes only its
slices that cross the window, and on each slice the network runs on a crop of the model's
``S x S`` input centred on the click (shifted inside the input near its edges), large enough
that the window lies well inside it. Training cuts its samples with the same functions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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
    image = transform.model_input(image_rows, stats)
    return torch.cat([image, transform.fit_maps(prompts)], dim=1)


@functools.lru_cache(maxsize=64)
def resize_matrix(n_from: int, n_to: int, antialias: bool) -> torch.Tensor:
    """``n_to x n_from``: the 1D linear map of ``F.interpolate(mode="bilinear",
    align_corners=False)`` along one axis (bilinear resizing is separable), found by resizing
    the identity, so it matches the Predictor's resize whatever PyTorch's kernel does. The
    identity is two pixels wide: PyTorch's antialiased kernel weighs a one-pixel-wide image
    differently from a wider one."""
    identity = torch.eye(n_from).view(n_from, 1, n_from, 1).expand(-1, -1, -1, 2)
    out = F.interpolate(
        identity.contiguous(),
        size=(n_to, 2),
        mode="bilinear",
        align_corners=False,
        antialias=antialias,
    )
    return out[:, 0, :, 0].T.contiguous()


@dataclass(frozen=True)
class CropPlan:
    """One view's ``crop x crop`` crop of the model input at (``u0``, ``v0``), computed from
    the slice pixels that feed it only: ``rows`` x ``cols`` of the ``height x width`` slice.

    :meth:`SliceTransform.model_input` and :meth:`SliceTransform.fit_maps` pad (or stretch) and
    resize whole slices, then the crop keeps a quarter; here each axis's resize is a small
    matrix restricted to the crop's rows, so ``image`` and ``maps`` give the same crop (to
    float rounding, tested) from about a third of the pixels, and ``restore`` maps the
    network's crop back onto the window's voxels only."""

    image_rows: torch.Tensor  # crop x len(rows): the image resize (antialiased when shrinking)
    image_cols: torch.Tensor
    map_rows: torch.Tensor  # the same for maps (plain bilinear, as fit_maps)
    map_cols: torch.Tensor
    back_rows: torch.Tensor  # height x crop: the crop's share of restore()
    back_cols: torch.Tensor  # width x crop
    rows: slice  # the slice pixels that feed the crop
    cols: slice

    @classmethod
    def around(
        cls, transform: SliceTransform, height: int, width: int, u0: int, v0: int, crop: int
    ):
        size = transform.size
        axes = []
        if transform.fit == "stretch":
            shrinking = max(height, width) > size
            for n, start in ((height, u0), (width, v0)):
                axes.append((n, 0, n, shrinking, start))
        else:  # padded to a square side first; the padding is outside every slice pixel
            side = max(height, width)
            left, _, top, _ = transform._padding(height, width)
            axes = [(side, top, height, side > size, u0), (side, left, width, side > size, v0)]
        parts = []
        for n, offset, length, shrinking, start in axes:
            crop_rows = slice(start, min(start + crop, size))
            image = resize_matrix(n, size, shrinking)[crop_rows, offset : offset + length]
            maps = resize_matrix(n, size, False)[crop_rows, offset : offset + length]
            back = resize_matrix(size, n, False)[offset : offset + length, crop_rows]
            used = torch.nonzero((image != 0).any(0) | (maps != 0).any(0))[:, 0]
            band = slice(int(used.min()), int(used.max()) + 1)
            parts.append((image[:, band], maps[:, band], back, band))
        (ir, mr, br, rows), (ic, mc, bc, cols) = parts
        return cls(ir, ic, mr, mc, br, bc, rows, cols)

    def image(self, unit: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
        """``BxKxRxC`` [0, 1] slice pixels (``rows`` x ``cols``) -> ``BxKxcropxcrop`` as
        ``fit_to_input``; ``fill`` (``BxKx1x1``): each slice's darkest value, the padding."""
        if fill is None:
            return self.image_rows @ unit @ self.image_cols.T
        # The resize's rows sum to one, so the padding contributes ``fill`` everywhere.
        return fill + self.image_rows @ (unit - fill) @ self.image_cols.T

    def maps(self, maps: torch.Tensor) -> torch.Tensor:
        """``BxCxRxC`` maps (zero outside the slice) -> ``BxCxcropxcrop`` as ``fit_maps``."""
        return self.map_rows @ maps @ self.map_cols.T

    def restore(self, logits: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """``Bxcropxcrop`` logits -> ``B x rows x cols`` of the slice, as ``restore`` would give
        from an input that is zero outside the crop."""
        return self.back_rows[rows] @ logits @ self.back_cols[cols].T
