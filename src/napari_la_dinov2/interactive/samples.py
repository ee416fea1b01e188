"""Training samples for the click model: simulated users correcting the default's masks.

An episode takes a training case and a mask the user starts from, then plays clicks as the
benchmark does (:mod:`.simulate`): zero to two earlier clicks whose windows are taken as fixed
(the expert mask pasted there, as a successful earlier click leaves it), then the click to
learn, most often at the point deepest inside the largest error region left, otherwise inside a
smaller region or, now and then, on a voxel the mask already has right (where the network must
leave the mask as it is). The starting masks are the default model's own: its fused mask, each
view's mask alone, and the fused logits at a lower and a higher threshold, so the errors are
the ones a user meets. With ``played_share``, that share of episodes starts instead from the
masks a click model left after its own earlier clicks on the case (``TrainingCase.played``,
from ``training/click_model/play_clicks.py``), those clicks shown as context and nothing pasted:
iterative training, as RITM does it, so the network learns what its own partial fixes look
like. Each episode gives a few slices of one view crossing the click's window,
cut and cropped exactly as :class:`~.refiner.Refiner` cuts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..postprocess import postprocess
from ..preprocess import IntensityStats, SliceTransform
from .clicks import Click, click_maps
from .geometry import crop_start, network_inputs, to_input, window_index
from .simulate import ErrorRegion, error_regions

STARTS = ("fused", "view0", "view1", "view2", "lower", "higher")
MIN_REGION = 20  # voxels: smaller error regions are left to the brush


@dataclass
class TrainingCase:
    """A case's image, expert mask, grid and the default model's logits per view."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]
    slice_axis: int
    logits: list[np.ndarray]
    # (bit-packed mask, clicks so far) after each click a click model played on this case
    played: list[tuple[np.ndarray, list[Click]]] = field(default_factory=list)
    stats: IntensityStats = field(init=False)
    _regions: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        self.stats = IntensityStats.of(self.image)

    def start_mask(self, start: str) -> np.ndarray:
        if start.startswith("played"):
            packed, _ = self.played[int(start[6:]) - 1]
            return np.unpackbits(packed, count=self.truth.size).reshape(self.truth.shape) > 0
        if start.startswith("view"):
            return self.logits[int(start[4:])] > 0
        fused = sum(x.astype(np.float32) for x in self.logits) / len(self.logits)
        if start == "fused":  # the automatic mask exactly as the Predictor cleans it
            return postprocess(fused > 0, self.slice_axis)
        return fused > (-2.0 if start == "lower" else 2.0)

    def regions(self, start: str) -> tuple[np.ndarray, list[ErrorRegion]]:
        if start not in self._regions:
            mask = self.start_mask(start)
            found = error_regions(mask, self.truth, self.spacing, min_size=MIN_REGION)
            self._regions[start] = (np.packbits(mask), found)
        packed, found = self._regions[start]
        mask = np.unpackbits(packed, count=self.truth.size).reshape(self.truth.shape).astype(bool)
        return mask, found


class EpisodeSampler:
    """``batch(rng) -> (inputs, targets, weights)`` for one view's network."""

    def __init__(
        self,
        cases: list[TrainingCase],
        transform: SliceTransform,
        axis_of,
        window_mm: float,
        crop: int,
        *,
        slices_per_episode: int = 4,
        jitter: int = 12,
        played_share: float = 0.0,
    ):
        self.cases = cases
        self.transform = transform
        self.axis_of = axis_of  # case -> the array axis this view cuts along
        self.window_mm, self.crop = window_mm, crop
        self.per_episode, self.jitter = slices_per_episode, jitter
        self.played_share = played_share

    def batch(self, rng: np.random.Generator, episodes: int):
        parts = [self.episode(rng) for _ in range(episodes)]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))

    def clicks(self, rng, case, mask, regions) -> tuple[np.ndarray, list[Click]]:
        """The mask after 0-2 earlier (fixed) clicks, and all clicks, the one to learn last."""
        mask = mask.copy()
        order = list(rng.permutation(len(regions))) if regions else []
        earlier = [regions[i] for i in order[: rng.integers(0, 3)]] if len(order) > 1 else []
        clicks = []
        for region in earlier:
            window = window_index(region.deepest, mask.shape, case.spacing, self.window_mm)
            mask[window] = case.truth[window]
            clicks.append(region.click())
        left = [r for r in regions if r not in earlier and mask[r.deepest] != case.truth[r.deepest]]
        return mask, clicks + [self.click_to_learn(rng, case, mask, left)]

    def click_to_learn(self, rng, case, mask, left: list[ErrorRegion]) -> Click:
        """Mostly the protocol's next click (the largest error region left), at times one in a
        smaller region or on a voxel the mask already has right."""
        roll = rng.random()
        if not left or roll < 0.1:  # a click where the mask is already right
            inside = rng.random() < 0.5
            candidates = np.argwhere((mask == case.truth) & (case.truth == inside))
            position = tuple(int(v) for v in candidates[rng.integers(len(candidates))])
            return Click(position, inside)
        if roll < 0.7:
            return left[0].click()
        weights = np.sqrt([r.size for r in left])
        return left[rng.choice(len(left), p=weights / weights.sum())].click()

    def episode(self, rng: np.random.Generator):
        case = self.cases[rng.integers(len(self.cases))]
        if self.played_share and case.played and rng.random() < self.played_share:
            k = int(rng.integers(1, len(case.played) + 1))
            mask, regions = case.regions(f"played{k}")
            clicks = [*case.played[k - 1][1], self.click_to_learn(rng, case, mask, regions)]
        else:
            mask, regions = case.regions(STARTS[rng.integers(len(STARTS))])
            mask, clicks = self.clicks(rng, case, mask, regions)
        click = clicks[-1]
        axis = self.axis_of(case)
        window = window_index(click.position, mask.shape, case.spacing, self.window_mm)
        count = min(self.per_episode, window[axis].stop - window[axis].start)
        along = np.arange(window[axis].start, window[axis].stop)
        chosen = np.sort(rng.choice(along, count, replace=False))
        return self._slices(case, axis, mask, clicks, window, chosen, rng)

    def _slices(self, case, axis, mask, clicks, window, chosen, rng):
        t = self.transform
        image = np.moveaxis(case.image, axis, 0)
        rows = t.neighbours(0, image.shape[0], image.shape[0])[chosen]
        raw = torch.from_numpy(np.ascontiguousarray(image[rows], dtype=np.float32))
        prompts, targets, inside = [], [], []
        for s in chosen:
            box = [slice(0, n) for n in mask.shape]
            box[axis] = slice(int(s), int(s) + 1)
            box = tuple(box)
            maps = click_maps(clicks, box, case.spacing)
            stacked = np.concatenate([mask[box][None].astype(np.float32), maps])
            prompts.append(np.moveaxis(stacked, axis + 1, 0))
            targets.append(np.moveaxis(case.truth[box], axis, 0).astype(np.float32))
            in_window = np.zeros(mask.shape, bool)[box]
            local = tuple(slice(0, 1) if a == axis else window[a] for a in range(3))
            in_window[local] = True
            inside.append(np.moveaxis(in_window, axis, 0).astype(np.float32))
        x = network_inputs(t, case.stats, raw, torch.from_numpy(np.concatenate(prompts)))
        y = t.fit_maps(torch.from_numpy(np.concatenate(targets))[:, None]).round()
        w = t.fit_maps(torch.from_numpy(np.concatenate(inside))[:, None]).round()
        height, width = image.shape[1:]
        others = [a for a in range(3) if a != axis]
        u, v = to_input(t, height, width, *(clicks[-1].position[a] for a in others))
        du, dv = rng.integers(-self.jitter, self.jitter + 1, size=2)
        u0, v0 = crop_start(u + du, t.size, self.crop), crop_start(v + dv, t.size, self.crop)
        crop = (..., slice(u0, u0 + self.crop), slice(v0, v0 + self.crop))
        return x[crop], y[crop], w[crop]
