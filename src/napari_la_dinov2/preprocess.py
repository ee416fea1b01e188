"""Per-model slice preparation and its exact geometric inverse.

A model's input is described by two typed, frozen objects:

- :class:`Preprocessing`: what every branch of a model shares: the square input size, the
  intensity standardisation and the 2.5D ``context`` (each slice with its ``k`` neighbours on
  either side as ``2k+1`` channels). The number of channels is derived, never stated.
- :class:`BranchInput`: what one branch sees: its ``view`` (the axis it cuts the volume along,
  named relative to the acquisition, see :func:`view_axis`) and its ``fit`` to the square input
  (``pad``: pad to a centred square, then resize, no distortion; ``stretch``: resize straight
  to the square, the paper's DINOv2 input). A single network is one branch; a multi-view
  ensemble has one branch per member.

Intensities are windowed per volume (robust percentiles, computed once, so every slice of a
case sees the same mapping). :class:`SliceTransform` fits ``HxW`` slices to the input and
``restore`` maps ``Bx1xSxS`` logits back onto the ``HxW`` grid by the inverse steps, so a mask
lands on exactly the voxels of its slice. Training and inference share this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

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
FITS = ("pad", "stretch")
INTENSITIES = ("zscore", "imagenet")
# Inputs beyond this side would need tens of GB of activations for any of our networks.
MAX_INPUT_SIZE = 2048


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


@dataclass(frozen=True)
class BranchInput:
    """How one branch of a model cuts and fits its slices."""

    view: str = "through-plane"
    fit: str = "pad"

    def __post_init__(self):
        view_axis(2, self.view)  # raises for an unknown view
        if self.fit not in FITS:
            raise ValueError(f"fit must be 'pad' or 'stretch', not {self.fit!r}")


@dataclass(frozen=True)
class Preprocessing:
    """What a model's input is, shared by its branches (one :class:`BranchInput` each)."""

    input_size: int
    intensity: str
    context: int = 0
    branches: tuple[BranchInput, ...] = field(default=(BranchInput(),))

    def __post_init__(self):
        if not _is_int(self.input_size) or not 16 <= self.input_size <= MAX_INPUT_SIZE:
            raise ValueError(f"input_size must be an integer in 16..{MAX_INPUT_SIZE}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be 'imagenet' or 'zscore', not {self.intensity!r}")
        if not _is_int(self.context) or not 0 <= self.context <= 8:
            raise ValueError(f"context must be an integer in 0..8, not {self.context!r}")
        if self.intensity == "imagenet" and self.context > 1:
            raise ValueError("ImageNet intensities take 3 channels: context 0 or 1, not more")
        branches = tuple(self.branches) if isinstance(self.branches, list | tuple) else ()
        if not branches or not all(isinstance(b, BranchInput) for b in branches):
            raise ValueError("a model needs at least one branch (view and fit)")
        object.__setattr__(self, "branches", branches)  # a tuple: frozen and hashable

    @property
    def channels(self) -> int:
        """``2k+1`` neighbouring slices in 2.5D; else one grey slice, repeated to 3 channels
        for ImageNet-normalised (RGB-pretrained) networks."""
        if self.context:
            return 2 * self.context + 1
        return 3 if self.intensity == "imagenet" else 1

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(branch.view for branch in self.branches)

    def transforms(self) -> list[SliceTransform]:
        """One :class:`SliceTransform` per branch, in order."""
        return [SliceTransform(self, branch) for branch in self.branches]

    def to_dict(self) -> dict:
        return dict(
            input_size=self.input_size,
            intensity=self.intensity,
            context=self.context,
            branches=[dict(view=b.view, fit=b.fit) for b in self.branches],
        )

    @classmethod
    def from_dict(cls, settings: Mapping) -> Preprocessing:
        """The one converter from a mapping: today's form (``branches``) or the form of
        earlier checkpoints and command lines (``fit`` for all views, ``fits`` one per view,
        ``views``, and a ``channels`` that must agree with the derived one). Raises
        ``ValueError`` with one sentence for anything that does not make sense."""
        if not isinstance(settings, Mapping):
            raise ValueError(f"preprocessing must be a mapping, not {type(settings).__name__}")
        known = {"input_size", "intensity", "context", "branches", "fit", "fits", "views"}
        unknown = sorted(set(settings) - known - {"channels"})
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s): {', '.join(unknown)}")
        try:
            made = cls(
                input_size=settings.get("input_size"),
                intensity=settings.get("intensity"),
                context=settings.get("context", 0),
                branches=_branches_from(settings),
            )
        except TypeError as error:
            raise ValueError(f"preprocessing has a value of the wrong type ({error})") from None
        stated = settings.get("channels")
        if stated is not None and stated != made.channels:
            raise ValueError(
                f"channels {stated!r} does not fit context {made.context} and "
                f"{made.intensity} intensities, which give {made.channels}; leave channels out"
            )
        return made

    def updated(self, overrides: Mapping | None) -> Preprocessing:
        """A copy with ``overrides`` (a partial mapping in either form of :meth:`from_dict`)
        applied. Views or fits given alone keep the other from this one where they fit."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ValueError(f"preprocessing must be a mapping, not {type(overrides).__name__}")
        merged = {k: v for k, v in self.to_dict().items() if k != "branches"}
        merged.update({k: v for k, v in overrides.items() if k not in ("fit", "fits", "views")})
        if "branches" not in overrides:
            views = overrides.get("views", self.views)
            fits = [b.fit for b in self.branches]
            if "fits" in overrides:
                fits = overrides["fits"]
            elif "fit" in overrides or (
                isinstance(views, list | tuple) and len(views) != len(fits)
            ):
                fits = [overrides.get("fit", fits[0])] * len(views)
            merged.update(views=views, fits=fits)
        return Preprocessing.from_dict(merged)

    def with_branches(self, branches) -> Preprocessing:
        return replace(self, branches=tuple(branches))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _branches_from(settings: Mapping) -> tuple[BranchInput, ...]:
    if "branches" in settings:
        if any(key in settings for key in ("fit", "fits", "views")):
            raise ValueError("give either branches or fit/fits/views, not both")
        items = settings["branches"]
        if not isinstance(items, list | tuple) or not all(isinstance(b, Mapping) for b in items):
            raise ValueError("branches must be a list of {view, fit} mappings")
        return tuple(BranchInput(**dict(b)) for b in items)
    views = settings.get("views", ["through-plane"])
    if isinstance(views, str) or not isinstance(views, list | tuple) or not views:
        raise ValueError("views must be a list naming at least one view")
    fits = settings.get("fits", [settings.get("fit", "pad")] * len(views))
    if isinstance(fits, str) or not isinstance(fits, list | tuple) or len(fits) != len(views):
        raise ValueError(f"fits must name one fit per view ({len(views)})")
    return tuple(BranchInput(view=v, fit=f) for v, f in zip(views, fits, strict=True))


def with_neighbours(first: int, stop: int, total: int, context: int) -> np.ndarray:
    """Slice indices ``(stop - first) x (2 * context + 1)``: slices ``first..stop-1``, each with
    its ``context`` neighbours on either side, the edge slice repeated past the volume's ends."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(first, stop)[:, None] + offsets[None, :], 0, total - 1)


@dataclass(frozen=True)
class IntensityStats:
    """Per-volume mapping: clip to [low, high] -> [0, 1]; mean/std of the result (for z-score).

    Why not MONAI's ScaleIntensityRangePercentiles: it rescales a whole float copy of the
    volume at once, where the Predictor streams batches of slices (a 640x640x88 scan would
    hold another 144 MB), and ``monai.transforms`` needs MONAI's package-wide import, which
    costs about 2.5 s before the first slice (see models/unet.py). The window is the
    same robust percentile window, computed once per volume on a strided sample."""

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
    """``model_input``: ``BxKxHxW`` raw slices (each with its neighbours, see :meth:`gather`) ->
    ``BxCxSxS`` model input; ``restore``: ``Bx1xSxS`` logits -> ``BxHxW`` on the slice grid."""

    def __init__(self, preprocessing: Preprocessing, branch: BranchInput):
        self.size = preprocessing.input_size
        self.channels = preprocessing.channels
        self.context = preprocessing.context
        self.intensity = preprocessing.intensity
        self.view = branch.view
        self.fit = branch.fit

    def neighbours(self, first: int, stop: int, total: int) -> np.ndarray:
        """Which slices feed slices ``first..stop-1``: ``Bx(2k+1)`` indices (``Bx1`` in 2D)."""
        return with_neighbours(first, stop, total, self.context)

    def gather(self, region: np.ndarray, first: int, stop: int) -> torch.Tensor:
        """The raw slices (``SxHxW`` ``region``) that feed slices ``first..stop-1``, as a
        float32 ``BxKxHxW`` tensor ready for :meth:`model_input`."""
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
            x = self._pad_square(x, mask=mode == "nearest")
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

    def _pad_square(self, x: torch.Tensor, mask: bool) -> torch.Tensor:
        left, right, top, bottom = self._padding(*x.shape[-2:])
        if not (left or right or top or bottom):
            return x
        if mask:
            return F.pad(x, (left, right, top, bottom), value=0)  # a mask: background
        # Pad each slice (and channel) with its own darkest value: background, not a fake
        # edge, and the same whichever other slices share the batch.
        height, width = x.shape[-2:]
        fill = x.amin(dim=(-2, -1), keepdim=True)
        padded = fill.expand(*x.shape[:-2], height + top + bottom, width + left + right).clone()
        padded[..., top : top + height, left : left + width] = x
        return padded

    def fit_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """``BxCxHxW`` maps in [0, 1] (a mask, click maps) -> ``BxCxSxS``, zero-padded and
        resized bilinearly: the prompt channels of the click model (see interactive/)."""
        if self.fit == "pad":
            maps = self._pad_square(maps, mask=True)
        if tuple(maps.shape[-2:]) == (self.size, self.size):
            return maps
        return F.interpolate(
            maps, size=(self.size, self.size), mode="bilinear", align_corners=False
        )

    def model_input(self, slices: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
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
