"""What a user can do about an error, one click at a time: the arms of benchmarks/interactive.py.

Every arm gets the same click (the protocol's: the point deepest inside the largest error
region) and returns the new mask:

- ``clicks``: the embedded click model (:class:`Refiner`), the product's own path;
- ``naive``: no learned model: a positive click adds the connected region it falls in of the
  default model's probability above ``NAIVE_LOW``, a negative one removes the region of the mask
  it falls in whose probability is below ``NAIVE_HIGH``, both within the click's window (the
  same window the model may change); where the click's voxel is outside that region (the
  default was sure), a ball of ``NAIVE_BALL_MM`` is added or removed;
- ``brush``: the user paints the clicked slice (the acquisition's plane) perfectly: the expert's
  slice pasted;
- ``finetune``: a quick fine-tune round (``TrainConfig.quick_round``) of the default model on
  the case with the clicked slices painted, then the whole case segmented again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_la_dinov2.interactive import Click, Refiner
from napari_la_dinov2.interactive.geometry import window_index

NAIVE_LOW, NAIVE_HIGH, NAIVE_BALL_MM = 0.2, 0.8, 3.0
ARMS = ("clicks", "naive", "brush", "finetune")


@dataclass
class CaseState:
    """One case as every arm sees it."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    meta: object
    probability: np.ndarray
    auto: np.ndarray
    refiner: Refiner
    prepared: object  # PreparedClicks

    @property
    def spacing(self):
        return tuple(float(s) for s in self.meta.spacing)


def step_clicks(state: CaseState, mask, clicks: list[Click], **_) -> np.ndarray:
    return state.refiner.refine(state.prepared, mask, clicks)


def _component_at(region: np.ndarray, position) -> np.ndarray:
    labelled, _ = ndimage.label(region, structure=np.ones((3, 3, 3), bool))
    number = labelled[position]
    return labelled == number if number else np.zeros_like(region)


def _ball(shape, position, spacing, radius_mm) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - p) * s) ** 2 for g, p, s in zip(grid, position, spacing, strict=True))
    return d2 <= radius_mm**2


def step_naive(state: CaseState, mask, clicks: list[Click], **_) -> np.ndarray:
    click = clicks[-1]
    window = window_index(click.position, mask.shape, state.spacing, state.refiner.model.window_mm)
    local = tuple(p - w.start for p, w in zip(click.position, window, strict=True))
    p = state.probability[window]
    region = (p > NAIVE_LOW) if click.positive else (mask[window].astype(bool) & (p < NAIVE_HIGH))
    picked = _component_at(region, local)
    if not picked.any():
        picked = _ball(p.shape, local, state.spacing, NAIVE_BALL_MM)
    out = mask.copy()
    out[window] = np.where(picked, 1 if click.positive else 0, out[window])
    return out


def step_brush(state: CaseState, mask, clicks: list[Click], **_) -> np.ndarray:
    axis = state.meta.through_plane_axis()
    index = [slice(None)] * 3
    index[axis] = clicks[-1].position[axis]
    out = mask.copy()
    out[tuple(index)] = state.truth[tuple(index)]
    return out


def step_finetune(state: CaseState, mask, clicks: list[Click], *, work: Path, **_) -> np.ndarray:
    """A quick round on the case with every clicked slice painted, from the default model."""
    from napari_la_dinov2.segmentation import InferenceSettings, SegmentationEngine
    from napari_la_dinov2.training import TrainConfig, finetune
    from napari_la_dinov2.training.cases import Case

    axis = state.meta.through_plane_axis()
    painted = state.auto.copy()
    for click in clicks:
        index = [slice(None)] * 3
        index[axis] = click.position[axis]
        painted[tuple(index)] = state.truth[tuple(index)]
    case = Case(state.name, state.image, painted, state.meta, prediction=state.auto)
    run = work / f"{state.name}-{len(clicks)}"
    config = TrainConfig.quick_round(model="default", device="cpu", output_dir=str(run))
    result = finetune([case], config)
    settings = InferenceSettings(model=str(Path(result.run_dir) / "best"), device="cpu")
    return SegmentationEngine(settings).segment(state.image, state.meta).labels


STEPS = dict(clicks=step_clicks, naive=step_naive, brush=step_brush, finetune=step_finetune)


def ceiling(auto: np.ndarray, truth: np.ndarray) -> dict:
    """What clicks can reach: the share of the error voxels within one voxel of the expert's
    surface (a band no click fixes), and the Dice with the 1, 3 and 5 largest of the other
    error blobs fixed perfectly."""
    from napari_la_dinov2.scoring.metrics import dice

    auto, truth = auto.astype(bool), truth.astype(bool)
    cube = np.ones((3, 3, 3), bool)
    band = ndimage.binary_dilation(truth, cube) & ~ndimage.binary_erosion(truth, cube)
    error = auto != truth
    blobs, count = ndimage.label(error & ~band, structure=cube)
    sizes = np.bincount(blobs.ravel())[1:]
    order = np.argsort(sizes)[::-1] + 1
    row = dict(band_share=float((error & band).sum() / max(1, error.sum())))
    for k in (1, 3, 5):
        fixed = auto.copy()
        chosen = np.isin(blobs, order[:k])
        fixed[chosen] = truth[chosen]
        row[f"fix{k}"] = dice(fixed, truth)
    return row


def embedded_in_field(image, truth, meta, side: int = 400, seed: int = 0):
    """The case in the middle of a ``side`` x ``side`` in-plane field of background noise
    (the image's darkest fifth, drawn at random): a full field-of-view scan with no mask."""
    rng = np.random.default_rng(seed)
    axis = meta.through_plane_axis()
    shape = [side, side]
    shape.insert(axis, image.shape[axis])
    dark = image[image <= np.percentile(image, 20)]
    field = rng.choice(dark, size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    offset = [(n - m) // 2 for n, m in zip(shape, image.shape, strict=True)]
    index = tuple(slice(o, o + m) for o, m in zip(offset, image.shape, strict=True))
    field[index], labels[index] = image, truth
    return field, labels, replace(meta, shape=tuple(shape))
