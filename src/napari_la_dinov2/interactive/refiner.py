"""Correction by clicks: prepare a volume once, then each click updates the mask near it.

:meth:`Refiner.prepare` makes a volume ready (the region, its intensity window and each view's
slices, as the Predictor does); :meth:`Refiner.refine` takes the current mask (the user's brush
edits included) and the clicks so far, and recomputes only the newest click's window: each view
runs its click network on its slices that cross the window, on a crop of its input around the
click; their logits are averaged on the volume's grid, as the default model averages its views,
and thresholded: at the model's ``add_threshold`` for a positive click, at its
``remove_threshold`` for a negative one. Voxels outside the window never change, nor do voxels
in ``keep``;
with ``monotone`` (the default) a positive click only adds voxels and a negative one only
removes them, so a click never undoes what the user asked for elsewhere in its window.
The widget, the ``refine`` command and the benchmark all call this one path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..inference import PreparedVolume, sigmoid_in_place
from ..segmentation import InferenceSettings, SegmentationEngine
from ..volume import VolumeMeta
from .clicks import Click, click_maps
from .geometry import CropPlan, crop_start, to_input, window_index
from .network import ClickModel, load_click_model

# Measured on the 2-core CPU (a view's 65 crops): channels-last convolutions take about 0.7 of
# the time, and batches of about 32 crops a little less than one batch of all.
CHANNELS_LAST, CHUNK = torch.channels_last, 32


@dataclass(frozen=True, eq=False)
class PreparedClicks:
    """A volume made ready for clicks: the Predictor's preparation plus the voxel size."""

    prepared: PreparedVolume
    spacing: tuple[float, float, float]
    _darkest: dict = field(default_factory=dict, repr=False)

    def darkest(self, b: int) -> np.ndarray:
        """Each of view ``b``'s slices' lowest raw value (its padding), found once."""
        if b not in self._darkest:
            self._darkest[b] = np.asarray(self.prepared.slices[b].min(axis=(1, 2)), np.float32)
        return self._darkest[b]

    def check(self, mask: np.ndarray, click: Click) -> None:
        if np.shape(mask) != self.prepared.shape:
            raise InputError(
                f"the mask has shape {np.shape(mask)} but the image has "
                f"{self.prepared.shape}; they must be on the same grid."
            )
        click.check_inside(self.prepared.shape)
        inside = all(s.start <= p < s.stop for p, s in zip(click.position, self.prepared.index))
        if not inside:
            raise InputError(
                f"the click {click.position} is outside the segmented region "
                f"{_box_text(self.prepared.index)}; click inside it or segment a larger region."
            )


def computed_slices(along: slice, spacing_mm: float, step_mm: float) -> np.ndarray:
    """Which slices of ``along`` the network runs on: every one, or with ``step_mm`` (the
    click model's ``slice_mm``) one every ``step_mm`` where the slices are thinner (the
    views across the acquisition's slices, 0.625 mm apart in LA 2018: every other one), and
    always the last; the slices between are interpolated (:func:`between_slices`)."""
    step = max(1, int(round(step_mm / spacing_mm))) if step_mm else 1
    chosen = np.arange(along.start, along.stop, step)
    return chosen if chosen[-1] == along.stop - 1 else np.append(chosen, along.stop - 1)


def between_slices(values: np.ndarray, at: np.ndarray, count: int) -> np.ndarray:
    """``values`` (``len(at) x ...``, at slice positions ``at``, increasing from 0 to
    ``count - 1``) -> ``count x ...``, linear in between."""
    if len(at) == count:
        return values
    right = np.clip(np.searchsorted(at, np.arange(count)), 1, len(at) - 1)
    left = right - 1
    weight = ((np.arange(count) - at[left]) / (at[right] - at[left])).astype(np.float32)
    weight = weight.reshape(-1, *([1] * (values.ndim - 1)))
    return values[left] * (1 - weight) + values[right] * weight


def _box_text(index) -> str:
    return "x".join(f"{s.start}:{s.stop}" for s in index)


class Refiner:
    """``prepare(volume, meta) -> PreparedClicks``, then ``refine(prepared, mask, clicks)``."""

    def __init__(
        self, model: ClickModel | None = None, *, device: str = "cpu", monotone: bool = True
    ):
        self.model = (model or load_click_model()).to(memory_format=CHANNELS_LAST)
        self.monotone = monotone
        # The Predictor's first level (region, intensity window, each view's slices) is the
        # same for clicks: one preparation for both, through the engine's one entry.
        settings = InferenceSettings(model="click model", device=device)
        self.predictor = SegmentationEngine(settings, model=self.model).predictor
        self.device = self.predictor.device
        self.branches = self.model.branches

    def prepare(self, volume: np.ndarray, meta: VolumeMeta, *, roi=None, slice_axis=None):
        prepared = self.predictor.prepare(volume, meta, slice_axis=slice_axis, roi=roi)
        return PreparedClicks(prepared, tuple(float(s) for s in meta.spacing))

    def refine(
        self,
        prepared: PreparedClicks,
        mask: np.ndarray,
        clicks: Sequence[Click],
        *,
        keep: np.ndarray | None = None,
    ) -> np.ndarray:
        """The mask after the last of ``clicks`` (the earlier ones are shown to the network as
        context); a new uint8 array, equal to ``mask`` outside the click's window."""
        if not clicks:
            return np.asarray(mask, dtype=np.uint8).copy()
        click = clicks[-1]
        prepared.check(mask, click)
        window = self.window(prepared, click)
        probability = self.window_probability(prepared, mask, clicks, window)
        out = np.asarray(mask, dtype=np.uint8).copy()
        model = self.model
        threshold = model.add_threshold if click.positive else model.remove_threshold
        changed = (probability > threshold).astype(np.uint8)
        if self.monotone:  # a positive click only adds, a negative one only removes
            combine = np.maximum if click.positive else np.minimum
            changed = combine(changed, out[window])
        if keep is not None:
            changed = np.where(keep[window], out[window], changed)
        out[window] = changed
        return out

    def window(self, prepared: PreparedClicks, click: Click) -> tuple[slice, slice, slice]:
        """The click's window, inside the prepared region."""
        shape, spacing = prepared.prepared.shape, prepared.spacing
        box = window_index(click.position, shape, spacing, self.model.window_mm)
        return tuple(
            slice(max(w.start, r.start), min(w.stop, r.stop))
            for w, r in zip(box, prepared.prepared.index, strict=True)
        )

    @torch.inference_mode()
    def window_probability(self, prepared, mask, clicks, window) -> np.ndarray:
        """Foreground probability over ``window``: the views' mean logits."""
        total = np.zeros([s.stop - s.start for s in window], dtype=np.float32)
        for b in range(len(self.branches)):
            total += self._view_logits(prepared, b, mask, clicks, window)
        total /= len(self.branches)
        return sigmoid_in_place(total)

    def _view_logits(self, prepared, b, mask, clicks, window) -> np.ndarray:
        """View ``b``'s logits over ``window`` (the volume's axes)."""
        pv, axis = prepared.prepared, prepared.prepared.axes[b]
        local = tuple(
            slice(w.start - r.start, w.stop - r.start)
            for w, r in zip(window, pv.index, strict=True)
        )
        rows, cols = (a for a in range(3) if a != axis)
        along = computed_slices(local[axis], prepared.spacing[axis], self.model.slice_mm)
        transform, net = self.branches[b].transform, self.branches[b].net
        height, width = pv.slices[b].shape[1:]
        row, col = (clicks[-1].position[a] - pv.index[a].start for a in (rows, cols))
        u, v = to_input(transform, height, width, row, col)
        size, crop = transform.size, self.model.crop
        plan = CropPlan.around(
            transform, height, width, crop_start(u, size, crop), crop_start(v, size, crop), crop
        )
        image = self._image(prepared, b, along, plan)
        maps = plan.maps(self._prompts(prepared, b, mask, clicks, window, plan)[along - along[0]])
        inputs = torch.cat([image, maps], dim=1).to(self.device, memory_format=CHANNELS_LAST)
        logits = torch.cat([net(part) for part in inputs.split(CHUNK)])[:, 0].float().cpu()
        logits = plan.restore(logits, local[rows], local[cols]).numpy()
        logits = between_slices(
            logits, along - local[axis].start, local[axis].stop - local[axis].start
        )
        return np.moveaxis(logits, 0, axis)

    def _image(self, prepared, b, along: np.ndarray, plan: CropPlan) -> torch.Tensor:
        """The image channels of the crops of view ``b``'s slices ``along``."""
        pv, transform = prepared.prepared, self.branches[b].transform
        total = pv.slices[b].shape[0]
        neighbours = transform.neighbours(0, total, total)[along]
        raw = np.ascontiguousarray(pv.slices[b][neighbours, plan.rows, plan.cols], np.float32)
        fill = None
        if transform.fit == "pad":  # each slice's darkest value pads it, as fit_to_input does
            darkest = torch.from_numpy(prepared.darkest(b)[neighbours])
            fill = transform.to_unit(darkest, pv.stats)[..., None, None]
        unit = transform.to_unit(torch.from_numpy(raw), pv.stats)
        return transform.standardize(plan.image(unit, fill), pv.stats)

    def _prompts(self, prepared, b, mask, clicks, window, plan) -> torch.Tensor:
        """``Bx3xRxC``: the mask and the click maps on the view's slices crossing the window,
        over the slice pixels that feed the crop."""
        region, axis = prepared.prepared.index, prepared.prepared.axes[b]
        rows, cols = (a for a in range(3) if a != axis)
        box = [None, None, None]
        box[axis] = window[axis]
        for a, band in ((rows, plan.rows), (cols, plan.cols)):
            box[a] = slice(region[a].start + band.start, region[a].start + band.stop)
        box = tuple(box)
        maps = click_maps(clicks, box, prepared.spacing)
        stacked = np.concatenate([np.asarray(mask[box], np.float32)[None], maps])
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(stacked, axis + 1, 0)))
