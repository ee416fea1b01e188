"""Per-model slice preparation and its exact geometric inverse.

Intensities are normalised per volume (robust percentiles, computed once, so every slice of a
case sees the same mapping), then each ``HxW`` slice is fitted to the model's square input:

- ``fit="pad"``: pad to a centred square, then resize (no distortion; the CNN baselines);
- ``fit="stretch"``: resize straight to the square (the paper's DINOv2 input).

With ``context: k`` (2.5D input) a slice is fed with its ``k`` neighbours on either side as
``2k+1`` channels, so a 2D network sees the through-plane shape of the atrium; at the ends of
the volume the edge slice is repeated.

``restore`` maps ``Bx1xSxS`` logits back onto the original ``HxW`` grid by the inverse steps,
so a mask lands on exactly the voxels of its slice. Training and inference share this module.

Views: a model cuts the volume along one of three axes, named relative to the acquisition so
that they mean the same whatever order the file stores its axes in (see :func:`view_axis`).
``preprocessing["views"]`` lists one view per branch of a model (default: the acquisition's
own slices); a multi-view ensemble has one member per view and averages their logits. Its
members may fit their slices differently: ``preprocessing["fits"]``, one per view, overrides
``fit`` (an in-plane view's slice is short along the through-plane axis; stretched, that axis gets
as many pixels as the in-plane one). :func:`slice_transforms` gives each branch its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PERCENTILES = (0.5, 99.5)
_MAX_STAT_SAMPLES = 2_000_000


# For an axial acquisition stored (x, y, z), as in the LA 2018 data, these are the axial,
# sagittal and coronal planes.
VIEWS = ("through-plane", "in-plane-1", "in-plane-2")
DEFAULT_VIEWS = ("through-plane",)


def view_axis(through_plane_axis: int, view: str) -> int:
    """The array axis a view cuts slices along: the acquisition's through-plane axis itself, or
    the first / second of the two in-plane axes (in array order). The slice's own two axes
    are the remaining ones, in array order, as ``np.moveaxis(volume, axis, 0)`` leaves them."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    if view == "through-plane":
        return through_plane_axis
    in_plane = [axis for axis in range(3) if axis != through_plane_axis]
    return in_plane[VIEWS.index(view) - 1]


def views_of(preprocessing: dict) -> list[str]:
    """The views a model's branches see (checked): ``preprocessing["views"]`` or the default."""
    views = list(preprocessing.get("views", DEFAULT_VIEWS))
    if not views:
        raise ValueError("views must name at least one view")
    for view in views:
        view_axis(2, view)  # raises for an unknown name
    return views


FITS = ("pad", "stretch")


def branch_preprocessing(preprocessing: dict) -> list[dict]:
    """One single-view preprocessing per branch (checked): the model's, with that branch's view
    and fit (``preprocessing["fits"]`` where given, one per view, else ``fit`` for all)."""
    views = views_of(preprocessing)
    fits = list(preprocessing.get("fits", [preprocessing.get("fit")] * len(views)))
    if len(fits) != len(views):
        raise ValueError(f"fits names {len(fits)} fit(s) for {len(views)} view(s)")
    base = {k: v for k, v in preprocessing.items() if k not in ("views", "fits")}
    branches = []
    for view, fit in zip(views, fits, strict=True):
        if fit not in FITS:
            raise ValueError(f"fit must be 'pad' or 'stretch', not {fit!r}")
        branches.append({**base, "fit": fit, "views": [view]})
    return branches


def with_neighbours(first: int, stop: int, total: int, context: int) -> np.ndarray:
    """Slice indices ``(stop - first) x (2 * context + 1)``: slices ``first..stop-1``, each with
    its ``context`` neighbours on either side, the edge slice repeated past the volume's ends."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(first, stop)[:, None] + offsets[None, :], 0, total - 1)


@dataclass(frozen=True)
class IntensityStats:
    """Per-volume mapping: clip to [low, high] -> [0, 1]; mean/std of the result (for z-score)."""

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def of(cls, volume: np.ndarray) -> IntensityStats:
        # In memory order (a view even for a transposed volume), sampled, then converted: no
        # full-size copy, whichever axis the slices run along and whatever the stored dtype.
        flat = np.ravel(np.asarray(volume), order="K")
        if flat.size > _MAX_STAT_SAMPLES:  # a strided sample is plenty for percentiles
            flat = flat[:: flat.size // _MAX_STAT_SAMPLES + 1]
        flat = flat.astype(np.float32)
        low, high = (float(v) for v in np.percentile(flat, PERCENTILES))
        if high <= low:  # mostly-constant image: fall back to the full range
            low, high = float(flat.min()), float(flat.max())
        if high <= low:
            high = low + 1.0
        scaled = np.clip((flat - low) / (high - low), 0.0, 1.0)
        return cls(low, high, float(scaled.mean()), float(max(scaled.std(), 1e-3)))


class SliceTransform:
    """``prepare``: ``BxHxW`` raw slices (or ``BxKxHxW`` with their neighbours, see
    :func:`with_neighbours`) -> ``BxCxSxS`` model input; ``restore``: the inverse."""

    def __init__(self, preprocessing: dict):
        self.size = int(preprocessing["input_size"])
        self.channels = int(preprocessing["channels"])
        self.context = int(preprocessing.get("context", 0))
        self.fit = preprocessing["fit"]
        self.intensity = preprocessing["intensity"]
        if self.fit not in FITS:
            raise ValueError(f"fit must be 'pad' or 'stretch', not {self.fit!r}")
        if self.intensity not in ("imagenet", "zscore"):
            raise ValueError(f"intensity must be 'imagenet' or 'zscore', not {self.intensity!r}")
        if self.size < 16:
            raise ValueError("input_size must be >= 16")
        if self.context < 0:
            raise ValueError(f"context must be 0 or more, not {self.context}")
        # One slice (repeated to 3 channels where a model wants RGB), or one per slice in 2.5D.
        allowed = (2 * self.context + 1,) if self.context else (1, 3)
        if self.channels not in allowed:
            raise ValueError(
                f"context {self.context} needs {' or '.join(map(str, allowed))} channels, "
                f"not {self.channels}"
            )
        if self.intensity == "imagenet" and self.channels not in (1, 3):
            raise ValueError("ImageNet intensities need 1 or 3 channels")

    def normalize(self, slices: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
        """``BxHxW`` raw -> ``BxCxHxW`` normalised (float32)."""
        return self.standardize(self.to_unit(slices, stats).unsqueeze(1), stats)

    def neighbours(self, first: int, stop: int, total: int) -> np.ndarray:
        """Which slices feed slices ``first..stop-1``: ``Bx(2k+1)`` indices (``Bx1`` in 2D)."""
        return with_neighbours(first, stop, total, self.context)

    def gather(self, region: np.ndarray, first: int, stop: int) -> torch.Tensor:
        """The raw slices (``SxHxW`` ``region``) that feed slices ``first..stop-1``, as a
        float32 ``BxKxHxW`` tensor ready for :meth:`prepare`."""
        rows = self.neighbours(first, stop, region.shape[0])
        return torch.from_numpy(np.ascontiguousarray(region[rows], dtype=np.float32))

    @staticmethod
    def to_unit(slices: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
        """Raw intensities -> [0, 1] by the volume's robust window."""
        return ((slices.float() - stats.low) / (stats.high - stats.low)).clamp_(0.0, 1.0)

    def standardize(self, unit: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
        """``Bx1xHxW`` (or ``BxCxHxW`` with neighbours) in [0, 1] -> ``BxCxHxW`` as the model
        expects (z-score or ImageNet); one channel is repeated where the model wants three."""
        x = unit if unit.shape[1] == self.channels else unit.expand(-1, self.channels, -1, -1)
        if self.intensity == "zscore":
            return (x - stats.mean) / stats.std
        mean = torch.tensor(IMAGENET_MEAN[: self.channels], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD[: self.channels], device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        return left, side - width - left, top, side - height - top

    def fit_to_input(self, x: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """``BxCxHxW`` -> ``BxCxSxS`` (pad-or-stretch, then resize). Masks use mode='nearest'
        (padded with 0); images are padded with each slice's darkest value."""
        if self.fit == "pad":
            left, right, top, bottom = self._padding(*x.shape[-2:])
            if (left or right or top or bottom) and mode == "nearest":
                x = F.pad(x, (left, right, top, bottom), value=0)  # a mask: background
            elif left or right or top or bottom:
                # Pad each slice (and channel) with its own darkest value: background, not a
                # fake edge, and the same whichever other slices share the batch.
                height, width = x.shape[-2:]
                side = height + top + bottom
                fill = x.amin(dim=(-2, -1), keepdim=True)
                padded = fill.expand(*x.shape[:-2], side, width + left + right).clone()
                padded[..., top : top + height, left : left + width] = x
                x = padded
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        if mode == "nearest":
            return F.interpolate(x, size=(self.size, self.size), mode="nearest-exact")
        shrinking = max(x.shape[-2:]) > self.size
        return F.interpolate(
            x,
            size=(self.size, self.size),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        )

    def prepare(self, slices: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
        """``BxHxW`` (or ``BxKxHxW``) raw -> ``BxCxSxS``. Resizing the [0, 1] image before the
        (affine, per-channel) standardisation gives the same result for a third of the work."""
        unit = self.to_unit(slices, stats)
        return self.standardize(self.fit_to_input(unit if unit.ndim == 4 else unit[:, None]), stats)

    def restore(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``Bx1xSxS`` logits -> ``BxHxW`` logits on the original slice grid."""
        if self.fit == "stretch":
            out = F.interpolate(
                logits.float(), size=(height, width), mode="bilinear", align_corners=False
            )
            return out[:, 0]
        side = max(height, width)
        out = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
        left, _, top, _ = self._padding(height, width)
        return out[:, 0, top : top + height, left : left + width]


def slice_transforms(preprocessing: dict) -> list[SliceTransform]:
    """One :class:`SliceTransform` per branch of a model, in the order of its views (checked:
    raises ``ValueError`` for any setting that does not make sense)."""
    return [SliceTransform(branch) for branch in branch_preprocessing(preprocessing)]
