"""Clicks: what a user points at, and how a network sees it.

A :class:`Click` is a voxel in the image's array indices and a sign: positive ("this belongs to
the atrium") or negative ("this does not"). A network sees clicks as two maps (positive and
negative), each click a Gaussian blob in millimetres (``CLICK_SIGMA_MM``) cut off at
``CLICK_REACH`` sigmas, so a slice a few millimetres from a click sees a smaller, fainter blob
and a far slice sees nothing: the maps carry where a click is in 3D, not just on its slice.
The same function renders the maps in training and at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

CLICK_SIGMA_MM = 2.5
CLICK_REACH = 3.0  # sigmas: beyond, a click's map is 0


@dataclass(frozen=True)
class Click:
    """``position``: (i, j, k) array indices of the image; ``positive``: add (True) or remove."""

    position: tuple[int, int, int]
    positive: bool

    @classmethod
    def parse(cls, text: str, positive: bool) -> Click:
        """'i,j,k' as typed on a command line (integers)."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) != 3:
                raise ValueError
            position = tuple(int(p) for p in parts)
        except ValueError:
            flag = "--add" if positive else "--remove"
            raise InputError(
                f"{flag} {text!r} is not a voxel; give three integers i,j,k (array indices)."
            ) from None
        return cls(position, positive)

    def check_inside(self, shape: Sequence[int]) -> None:
        if any(not 0 <= p < n for p, n in zip(self.position, shape, strict=True)):
            kind = "positive" if self.positive else "negative"
            raise InputError(
                f"the {kind} click {self.position} is outside the volume of shape "
                f"{tuple(shape)}; give array indices from 0 to shape - 1."
            )


def click_maps(
    clicks: Sequence[Click],
    index: tuple[slice, slice, slice],
    spacing: Sequence[float],
) -> np.ndarray:
    """``2 x region`` float32 maps (positive, negative) of the clicks over the box ``index`` of
    the volume (three slices with starts and stops), each click ``exp(-d^2 / 2 sigma^2)`` of
    its distance ``d`` in mm, the maximum where clicks overlap."""
    shape = tuple(s.stop - s.start for s in index)
    maps = np.zeros((2, *shape), dtype=np.float32)
    reach = CLICK_SIGMA_MM * CLICK_REACH
    for click in clicks:
        # The Gaussian is a product of one per axis, each cut at ``reach``: only the box around
        # the click is computed, which keeps a click's maps cheap on a large region.
        near, factors = [], []
        for p, s, mm in zip(click.position, index, spacing, strict=True):
            half = int(np.floor(reach / float(mm)))
            first, stop = max(s.start, p - half), min(s.stop, p + half + 1)
            if first >= stop:
                break
            coords = (np.arange(first, stop) - p) * float(mm)
            factors.append(np.exp(-(coords**2) / (2 * CLICK_SIGMA_MM**2)).astype(np.float32))
            near.append(slice(first - s.start, stop - s.start))
        else:
            blob = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
            target = maps[0 if click.positive else 1][tuple(near)]
            np.maximum(target, blob, out=target)
    return maps


def stroke_points(path: np.ndarray, spacing: Sequence[float], step_mm: float) -> np.ndarray:
    """A scribble as clicks: the points of the polyline ``path`` (``N x 3`` voxel coordinates,
    ``spacing`` mm per voxel along each) every ``step_mm`` along it, its first and last
    vertices included, as ``M x 3`` coordinates (a one-vertex path gives that vertex)."""
    path = np.asarray(path, dtype=float).reshape(-1, 3)
    lengths = np.linalg.norm(np.diff(path, axis=0) * np.asarray(spacing, float), axis=1)
    along = np.concatenate([[0.0], np.cumsum(lengths)])
    if along[-1] <= 0:
        return path[:1].copy()
    count = max(1, int(np.ceil(along[-1] / float(step_mm))))
    wanted = np.linspace(0.0, along[-1], count + 1)
    return np.stack([np.interp(wanted, along, path[:, a]) for a in range(3)], axis=1)
