"""Training batches of 2D slices: sampling that keeps the atrium in view, the model's own
preprocessing, and augmentation (MONAI transforms).

Each case is cut along the axis of a branch's view and fitted once to the model's input size by
that branch's :class:`~napari_la_dinov2.preprocess.SliceTransform` (as at inference), kept as
one float16 channel in [0, 1]: 88 slices at 448x448 take 35 MB. Each batch then only gathers,
augments and standardises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..preprocess import IntensityStats, SliceTransform, view_axis
from .cases import Case


@dataclass
class PreparedCase:
    """A case as model-sized slices of one view: ``Sx1xNxN`` unit images and masks."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    stats: IntensityStats
    foreground: np.ndarray

    @classmethod
    def of(cls, case: Case, transform: SliceTransform) -> PreparedCase:
        axis = view_axis(case.meta.through_plane_axis(), transform.view)
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
    """Random left-right flips, small rotations and scalings, contrast (gamma), brightness and
    noise, applied by MONAI's dictionary transforms to a slice and its mask alike."""

    flip: bool = True
    rotate_degrees: float = 15.0
    scale: float = 0.15  # zoom within 1 -/+ this
    gamma: tuple[float, float] = (0.8, 1.25)
    brightness: float = 0.1
    noise_std: float = 0.02

    def transform(self, seed: int):
        """The MONAI pipeline on ``{"image": CxHxW in [0, 1], "label": 1xHxW}``, seeded."""
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandFlipd,
            RandGaussianNoised,
            RandShiftIntensityd,
        )

        steps = [
            RandAffined(
                keys=("image", "label"), prob=1.0, mode=("bilinear", "nearest"),
                rotate_range=(math.radians(self.rotate_degrees),), scale_range=(self.scale,) * 2,
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys="image", prob=1.0, gamma=self.gamma),
            RandShiftIntensityd(keys="image", prob=1.0, offsets=self.brightness),
        ]  # fmt: skip
        if self.flip:
            steps.insert(0, RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1))
        if self.noise_std > 0:
            steps.append(RandGaussianNoised(keys="image", prob=1.0, std=self.noise_std))
        pipeline = Compose(steps, lazy=False)
        pipeline.set_random_state(seed=seed)
        return pipeline


def augment(unit: torch.Tensor, mask: torch.Tensor, pipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """One slice (``CxNxN`` in [0, 1]) and its mask through the MONAI ``pipeline``. The slice
    is shifted to its darkest value first, so that what rotates in from outside is background,
    not a fake edge."""
    fill = unit.amin()
    out = pipeline({"image": unit - fill, "label": mask})
    image = torch.as_tensor(out["image"]) + fill
    return image.clamp_(0.0, 1.0).float(), torch.as_tensor(out["label"]).float()


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


def make_batch(
    cases: list[PreparedCase],
    picks: list[tuple[int, int]],
    transform: SliceTransform,
    pipeline=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``BxCxNxN`` model input and ``Bx1xNxN`` float mask for the picked slices, each through
    the augmentation ``pipeline`` (see :meth:`Augmentation.transform`) when given."""
    xs, ys = [], []
    for c, s in picks:
        unit, mask = cases[c].inputs(s, s + 1, transform)[0], cases[c].masks[s].float()
        if pipeline is not None:
            unit, mask = augment(unit, mask, pipeline)
        xs.append(transform.standardize(unit[None], cases[c].stats))
        ys.append(mask)
    return torch.cat(xs), torch.stack(ys)
