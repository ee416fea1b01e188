"""Training batches of 2D slices: sampling that keeps the atrium in view, the model's own
preprocessing, and augmentation.

Each case is cut along its through-plane axis (or the axis of the model's view) and fitted once to the model's input size by the
model's :class:`~napari_la_dinov2.preprocess.SliceTransform` (as at inference), kept as one
float16 channel in [0, 1]: 88 slices at 448x448 take 35 MB. Each batch then only gathers,
augments and standardises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess import IntensityStats, SliceTransform, view_axis
from .cases import Case


@dataclass
class PreparedCase:
    """A case as model-sized slices: ``Sx1xNxN`` unit images, ``Sx1xNxN`` masks, stats."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    stats: IntensityStats
    foreground: np.ndarray

    @classmethod
    def of(cls, case: Case, transform: SliceTransform, view: str = "through-plane") -> PreparedCase:
        axis = view_axis(case.meta.through_plane_axis(), view)
        slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(case.image, axis, 0)))
        masks = torch.from_numpy(np.ascontiguousarray(np.moveaxis(case.labels, axis, 0)))
        stats = IntensityStats.of(case.image)
        images, fitted = [], []
        for start in range(0, slices.shape[0], 16):  # bounded memory while resizing
            unit = transform.to_unit(slices[start : start + 16], stats).unsqueeze(1)
            images.append(transform.fit_to_input(unit).half())
            mask = masks[start : start + 16].float().unsqueeze(1)
            fitted.append(transform.fit_to_input(mask, mode="nearest").to(torch.uint8))
        masks_fitted = torch.cat(fitted)
        foreground = np.flatnonzero(masks_fitted.flatten(1).any(dim=1).numpy())
        return cls(case.name, torch.cat(images), masks_fitted, stats, foreground)

    def inputs(self, first: int, stop: int, transform: SliceTransform) -> torch.Tensor:
        """Slices ``first..stop-1`` as float32 ``BxKxNxN`` unit images: one channel each, or
        with their neighbours as channels in 2.5D (``transform.context``)."""
        return self.images[transform.neighbours(first, stop, self.images.shape[0]), 0].float()


@dataclass(frozen=True)
class Augmentation:
    """Random flips, small rotations and scalings, contrast/brightness jitter and noise."""

    flip: bool = True
    rotate_degrees: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    contrast: float = 0.15
    brightness: float = 0.1
    noise_std: float = 0.02


class SliceSampler:
    """Draws ``(case index, slice index)`` pairs: a share ``foreground_fraction`` from slices that
    hold atrium, the rest from all slices, so empty slices are seen but do not dominate."""

    def __init__(self, cases: list[PreparedCase], foreground_fraction: float = 0.6):
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must be within [0, 1]")
        self.all = [(c, s) for c, case in enumerate(cases) for s in range(case.images.shape[0])]
        self.fg = [(c, int(s)) for c, case in enumerate(cases) for s in case.foreground]
        self.foreground_fraction = foreground_fraction

    def __len__(self) -> int:
        return len(self.all)

    def epoch(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        n_fg = int(round(count * self.foreground_fraction)) if self.fg else 0
        picks = [self.fg[i] for i in rng.integers(0, len(self.fg), n_fg)] if n_fg else []
        picks += [self.all[i] for i in rng.integers(0, len(self.all), count - n_fg)]
        rng.shuffle(picks)
        return picks


def _random_affine(batch: int, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(aug.rotate_degrees)
    low, high = aug.scale
    scale = low + torch.rand(batch, generator=generator) * (high - low)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if aug.flip:
        flips = torch.rand(batch, generator=generator) < 0.5
        theta[flips, 0, :] *= -1  # mirror left-right
    return theta


def make_batch(
    cases: list[PreparedCase],
    picks: list[tuple[int, int]],
    transform: SliceTransform,
    augmentation: Augmentation | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``BxCxNxN`` model input and ``Bx1xNxN`` float mask for the picked slices."""
    unit = torch.cat([cases[c].inputs(s, s + 1, transform) for c, s in picks])
    y = torch.stack([cases[c].masks[s] for c, s in picks]).float()
    batch = unit.shape[0]
    if augmentation is not None:
        theta = _random_affine(batch, augmentation, generator)
        grid = F.affine_grid(theta, list(unit.shape), align_corners=False)
        # Out-of-slice corners get each slice's darkest value: background, not a fake edge.
        fill = unit.amin(dim=(2, 3), keepdim=True)
        unit = (
            F.grid_sample(
                unit - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            + fill
        )
        y = (
            F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
        ).float()
        shape = (batch, 1, 1, 1)
        contrast = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * augmentation.contrast
        bright = (torch.rand(shape, generator=generator) * 2 - 1) * augmentation.brightness
        unit = ((unit - 0.5) * contrast + 0.5 + bright).clamp_(0.0, 1.0)
        if augmentation.noise_std > 0:
            unit = unit + augmentation.noise_std * torch.randn(unit.shape, generator=generator)
    x = torch.cat(
        [transform.standardize(unit[i : i + 1], cases[c].stats) for i, (c, _) in enumerate(picks)]
    )
    return x, y
