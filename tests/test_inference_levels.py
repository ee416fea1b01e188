"""The Predictor's two levels (prepare, then probabilities and labels) give exactly what
predict gives; views cut without copying; a logits source in place of the networks; the
branches of a multi-view model averaged on the volume's grid; cancel flags."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from napari_la_dinov2.errors import CancelledError, is_cancelled, raise_if_cancelled
from napari_la_dinov2.inference import Predictor, RegionOfInterest
from napari_la_dinov2.models import build_model
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import TINY_UNET_KWARGS
from tests.test_inference import bright_box_volume, intensity_model


def test_the_two_levels_give_exactly_what_predict_gives(tiny_unet, synthetic):
    volume, _ = synthetic
    meta = VolumeMeta.from_spacing(volume.shape)
    predictor = Predictor(tiny_unet, device="cpu", batch_size=5)
    prepared = predictor.prepare(volume, meta)
    probs = predictor.probabilities(prepared)
    assert probs.dtype == np.float32 and probs.shape == volume.shape
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    labels = predictor.labels(probs, prepared)
    np.testing.assert_array_equal(labels, predictor.predict(volume, meta))  # bit-exact
    # labels thresholds at the predictor's threshold (before post-processing)
    raw = Predictor(tiny_unet, device="cpu", morphology=False, largest_cc=False, threshold=0.3)
    np.testing.assert_array_equal(raw.labels(probs, prepared), (probs > 0.3).astype(np.uint8))


def test_prepare_cuts_views_of_the_volume_without_copying(tiny_unet):
    volume, _ = bright_box_volume()  # 40 x 33 x 21
    predictor = Predictor(tiny_unet, device="cpu")
    prepared = predictor.prepare(volume, roi=RegionOfInterest(box=(4, 30, 2, 20), slices=(3, 15)))
    assert np.shares_memory(prepared.slices[0], volume)
    assert prepared.slices[0].base is not None  # a view, not an array of its own
    # slices first: 12 slices (axis 2) of 26 rows (axis 0) x 18 columns (axis 1)
    assert prepared.slices[0].shape == (12, 26, 18)
    np.testing.assert_array_equal(prepared.slices[0][5], volume[4:30, 2:20, 8])
    assert prepared.index == (slice(4, 30), slice(2, 20), slice(3, 15))
    assert prepared.shape == volume.shape and prepared.total == 12
    # the network input of a few slices: BxCxSxS at the model's input size
    batch = predictor.inputs(prepared, 0, 2, 7)
    assert batch.shape == (5, 1, 64, 64) and batch.dtype == torch.float32


def test_a_logits_source_replaces_the_networks():
    volume, _ = bright_box_volume()
    model = intensity_model()
    predictor = Predictor(model, device="cpu", batch_size=8)
    prepared = predictor.prepare(volume, roi=RegionOfInterest(box=(4, 30, 2, 20), slices=(3, 15)))
    calls = []

    def constant(branch, first, stop):
        calls.append((branch, first, stop))
        return torch.full((stop - first, 1, 64, 64), 0.7)

    probs = predictor.probabilities(prepared, logits_of=constant)
    assert model.net.calls == 0  # the network never ran
    assert calls == [(0, 0, 8), (0, 8, 12)]  # the 12 slices of the region, in batches of 8
    inside = np.zeros(volume.shape, bool)
    inside[4:30, 2:20, 3:15] = True
    sigmoid = 1.0 / (1.0 + math.exp(-0.7))  # 0.6682
    np.testing.assert_allclose(probs[inside], sigmoid, rtol=1e-6)
    assert (probs[~inside] == 0).all()


def test_the_branches_of_a_multi_view_model_are_averaged_on_the_volume_grid():
    # Three views, each cutting the volume along its own axis; each branch gives its own
    # constant logit, so the volume's probability is the sigmoid of their mean.
    model = build_model(
        "unet_ensemble",
        preprocessing=dict(
            input_size=64, views=["through-plane", "in-plane-1", "in-plane-2"], fit="stretch"
        ),
        members=3,
        **TINY_UNET_KWARGS,
    )
    assert [b.view for b in model.branches] == ["through-plane", "in-plane-1", "in-plane-2"]
    assert [b.net for b in model.branches] == list(model.net.members)
    volume, _ = bright_box_volume()  # 40 x 33 x 21, slices along axis 2
    predictor = Predictor(model, device="cpu", batch_size=16)
    prepared = predictor.prepare(volume)
    assert prepared.axes == (2, 0, 1)
    assert [s.shape for s in prepared.slices] == [(21, 40, 33), (40, 33, 21), (33, 40, 21)]
    assert all(np.shares_memory(s, volume) for s in prepared.slices)
    seen = {0: [], 1: [], 2: []}
    totals = []

    def per_branch(branch, first, stop):
        seen[branch].extend(range(first, stop))
        return torch.full((stop - first, 1, 64, 64), [1.0, -2.0, 4.0][branch])

    probs = predictor.probabilities(
        prepared, logits_of=per_branch, progress=lambda d, t: totals.append((d, t))
    )
    assert seen == {0: list(range(21)), 1: list(range(40)), 2: list(range(33))}
    assert totals[0] == (0, 94) and totals[-1] == (94, 94)  # 21 + 40 + 33 slices
    np.testing.assert_allclose(probs, 1.0 / (1.0 + math.exp(-1.0)), rtol=1e-6)  # mean logit 1


def test_cancel_flags():
    assert not is_cancelled(None)
    flag = threading.Event()
    assert not is_cancelled(flag)
    flag.set()
    assert is_cancelled(flag)
    assert is_cancelled(lambda: 1) and not is_cancelled(lambda: 0)
    raise_if_cancelled(None, "never")
    with pytest.raises(CancelledError, match="^stopped after 3 of 9 slices$"):
        raise_if_cancelled(flag, "after 3 of 9 slices")
