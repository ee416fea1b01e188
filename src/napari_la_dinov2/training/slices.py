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
    """A case as model-sized slices of one view: ``Sx1xNxN`` unit images and masks; which
    slices hold atrium (``foreground``) and which the user corrected (``corrected``, indices)."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    stats: IntensityStats
    foreground: np.ndarray
    corrected: np.ndarray
    replay: bool = False

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
        return cls(
            case.name,
            torch.cat(images),
            masks_fitted,
            stats,
            foreground,
            corrected_slices(case, axis),
            case.replay,
        )

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
                keys=("image", "label"),
                prob=1.0,
                mode=("bilinear", "nearest"),
                rotate_range=(math.radians(self.rotate_degrees),),
                scale_range=(self.scale,) * 2,
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys="image", prob=1.0, gamma=self.gamma),
            RandShiftIntensityd(keys="image", prob=1.0, offsets=self.brightness),
        ]
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


def corrected_slices(case: Case, axis: int) -> np.ndarray:
    """Indices of the slices (along ``axis``) where the user changed the model's mask."""
    if case.prediction is None:
        return np.zeros(0, dtype=int)
    changed = np.asarray(case.prediction).astype(bool) != case.labels.astype(bool)
    return np.flatnonzero(np.moveaxis(changed, axis, 0).reshape(changed.shape[axis], -1).any(1))


class SliceSampler:
    """Draws ``(case index, slice index)`` pairs: a share ``foreground_fraction`` from slices that
    hold atrium, the rest from all slices, so empty slices are seen but do not dominate.

    Within each pool a slice the user corrected weighs ``correction_weight`` times an untouched
    one (the untouched slices are the model's own guess: worth less to learn from), and the
    slices of replayed cases together weigh ``replay_share`` of the draw."""

    def __init__(
        self,
        cases: list[PreparedCase],
        foreground_fraction: float = 0.6,
        correction_weight: float = 1.0,
        replay_share: float = 0.25,
    ):
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must be within [0, 1]")
        self.all = [(c, s) for c, case in enumerate(cases) for s in range(case.images.shape[0])]
        self.fg = [(c, int(s)) for c, case in enumerate(cases) for s in case.foreground]
        self.foreground_fraction = foreground_fraction
        weights = _slice_weights(cases, correction_weight, replay_share)
        self.p_all = _normalised([weights[c][s] for c, s in self.all])
        self.p_fg = _normalised([weights[c][s] for c, s in self.fg])

    def __len__(self) -> int:
        return len(self.all)

    def epoch(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        n_fg = int(round(count * self.foreground_fraction)) if self.fg else 0
        picks = [self.fg[i] for i in rng.choice(len(self.fg), n_fg, p=self.p_fg)] if n_fg else []
        picks += [self.all[i] for i in rng.choice(len(self.all), count - n_fg, p=self.p_all)]
        rng.shuffle(picks)
        return picks


def _slice_weights(cases: list[PreparedCase], correction_weight, replay_share) -> list:
    weights = []
    for case in cases:
        w = np.ones(case.images.shape[0])
        w[case.corrected] = correction_weight
        weights.append(w)
    replayed = [case.replay for case in cases]
    if any(replayed) and not all(replayed):  # scale the replayed cases to their share
        new = sum(w.sum() for w, r in zip(weights, replayed) if not r)
        old = sum(w.sum() for w, r in zip(weights, replayed) if r)
        scale = replay_share / (1 - replay_share) * new / old
        weights = [w * scale if r else w for w, r in zip(weights, replayed)]
    return weights


def _normalised(values) -> np.ndarray | None:
    values = np.asarray(values, dtype=float)
    return values / values.sum() if values.size else None


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
