"""Correction by clicks: prepare a volume once, then each click updates the mask near it.

:meth:`Refiner.prepare` makes a volume ready (the region, its intensity window and each view's
slices, as the Predictor does); :meth:`Refiner.refine` takes the current mask (the user's brush
edits included) and the clicks so far, and recomputes only the newest click's window: each view
runs its click network on its slices that cross the window, on a crop of its input around the
click; their logits are averaged on the volume's grid, as the default model averages its views,
and thresholded at 0.5. Voxels outside the window never change, nor do voxels in ``keep``;
with ``monotone`` (the default) a positive click only adds voxels and a negative one only
removes them, so a click never undoes what the user asked for elsewhere in its window.
The widget, the ``refine`` command and the benchmark all call this one path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..inference import PreparedVolume, sigmoid_in_place
from ..segmentation import InferenceSettings, SegmentationEngine
from ..volume import VolumeMeta
from .clicks import Click, click_maps
from .geometry import crop_start, network_inputs, to_input, window_index
from .network import ClickModel, load_click_model

THRESHOLD = 0.5


@dataclass(frozen=True, eq=False)
class PreparedClicks:
    """A volume made ready for clicks: the Predictor's preparation plus the voxel size."""

    prepared: PreparedVolume
    spacing: tuple[float, float, float]

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


def _box_text(index) -> str:
    return "x".join(f"{s.start}:{s.stop}" for s in index)


class Refiner:
    """``prepare(volume, meta) -> PreparedClicks``, then ``refine(prepared, mask, clicks)``."""

    def __init__(
        self, model: ClickModel | None = None, *, device: str = "cpu", monotone: bool = True
    ):
        self.model = model or load_click_model()
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
        changed = (probability > THRESHOLD).astype(np.uint8)
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
        pv, axis = prepared.prepared, prepared.prepared.axes[b]
        region = pv.index
        transform, net = self.branches[b].transform, self.branches[b].net
        first, stop = (
            window[axis].start - region[axis].start,
            window[axis].stop - region[axis].start,
        )
        rows, cols = (a for a in range(3) if a != axis)
        height, width = pv.slices[b].shape[1:]
        image = transform.gather(pv.slices[b], first, stop).to(self.device)
        prompts = self._prompts(prepared, b, mask, clicks, window).to(self.device)
        inputs = network_inputs(transform, pv.stats, image, prompts)
        row, col = (clicks[-1].position[a] - region[a].start for a in (rows, cols))
        u, v = to_input(transform, height, width, row, col)
        size, crop = transform.size, self.model.crop
        u0, v0 = crop_start(u, size, crop), crop_start(v, size, crop)
        canvas = torch.zeros((inputs.shape[0], 1, size, size), device=self.device)
        canvas[..., u0 : u0 + crop, v0 : v0 + crop] = net(
            inputs[..., u0 : u0 + crop, v0 : v0 + crop]
        )
        logits = transform.restore(canvas, height, width).float().cpu().numpy()
        r = slice(window[rows].start - region[rows].start, window[rows].stop - region[rows].start)
        c = slice(window[cols].start - region[cols].start, window[cols].stop - region[cols].start)
        return np.moveaxis(logits[:, r, c], 0, axis)

    def _prompts(self, prepared, b, mask, clicks, window) -> torch.Tensor:
        """``Bx3xHxW``: the mask and the click maps on the view's slices crossing the window."""
        region, axis = prepared.prepared.index, prepared.prepared.axes[b]
        box = list(region)
        box[axis] = window[axis]
        box = tuple(box)
        maps = click_maps(clicks, box, prepared.spacing)
        stacked = np.concatenate([np.asarray(mask[box], np.float32)[None], maps])
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(stacked, axis + 1, 0)))
