"""Training samples of the click model: episodes from the default's masks and, for iterative
training, from the states a click model left after its own clicks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2.interactive import Click, ClickModel
from napari_la_dinov2.interactive.geometry import window_index
from napari_la_dinov2.interactive.samples import STARTS, EpisodeSampler, TrainingCase
from napari_la_dinov2.preprocess import view_axis

from .conftest import synthetic_case
from .test_interactive import SPACING, tiny_segmenter


@pytest.fixture
def training_case():
    image, truth = synthetic_case(shape=(40, 36, 14))
    truth = truth.astype(bool)
    # Each view's "logits": the truth shifted by a few voxels, so every start has errors.
    logits = [np.where(np.roll(truth, s, axis=0), 4.0, -4.0).astype(np.float16) for s in (2, 3, 4)]
    case = TrainingCase("synthetic", image, truth, SPACING, 2, logits)
    played_mask = truth.copy()
    played_mask[5:15, 10:20, 4:10] = True  # what a click left: a block of wall taken
    first = Click((8, 12, 6), False)
    case.played = [(np.packbits(played_mask), [first])]
    return case, played_mask, first


def _sampler(case, share: float) -> tuple[EpisodeSampler, list]:
    model = ClickModel.from_segmenter(tiny_segmenter(), crop=24, window_mm=6.0)
    transform = model.transforms[0]
    seen = []
    sampler = EpisodeSampler(
        [case],
        transform,
        lambda c: view_axis(c.slice_axis, transform.view),
        model.window_mm,
        model.crop,
        played_share=share,
    )
    real = sampler._slices

    def spy(case, axis, mask, clicks, window, chosen, rng):
        seen.append((mask.copy(), list(clicks)))
        return real(case, axis, mask, clicks, window, chosen, rng)

    sampler._slices = spy
    return sampler, seen


def test_played_states_start_episodes_with_their_clicks_as_context(training_case):
    case, played_mask, first = training_case
    sampler, seen = _sampler(case, share=1.0)
    x, y, w = sampler.batch(np.random.default_rng(0), episodes=3)
    assert x.shape[0] == y.shape[0] == w.shape[0] and x.shape[-2:] == (24, 24)
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    for mask, clicks in seen:
        assert np.array_equal(mask, played_mask)  # nothing pasted: the click model's own state
        assert clicks[0] == first and len(clicks) == 2
        learned = clicks[-1]
        # the click to learn points at an error of that state, or (now and then) at a right voxel
        assert isinstance(learned.positive, bool) and all(
            0 <= p < n for p, n in zip(learned.position, played_mask.shape, strict=True)
        )


def test_without_a_played_share_episodes_start_from_the_defaults_masks(training_case):
    case, played_mask, _ = training_case
    sampler, seen = _sampler(case, share=0.0)
    sampler.batch(np.random.default_rng(1), episodes=4)
    starts = [case.start_mask(name) for name in STARTS]
    assert not any(np.array_equal(mask, played_mask) for mask, _ in seen)
    for mask, clicks in seen:
        # earlier clicks paste the expert's mask in their windows; elsewhere a default's start
        fixed = np.zeros(mask.shape, bool)
        for earlier in clicks[:-1]:
            fixed[window_index(earlier.position, mask.shape, SPACING, sampler.window_mm)] = True
        assert np.array_equal(mask[fixed], case.truth[fixed])
        assert any(np.array_equal(mask[~fixed], start[~fixed]) for start in starts)
