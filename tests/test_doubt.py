"""The model's doubt: members' disagreement (or a single network's mirror disagreement), and
the slices ranked by it."""

from __future__ import annotations

import numpy as np
import torch

from napari_la_dinov2.doubt import doubt_map, rank_slices
from napari_la_dinov2.inference import Predictor, RegionOfInterest
from napari_la_dinov2.io import VolumeMeta
from napari_la_dinov2.models import build_model
from napari_la_dinov2.models.packing import ensemble_of
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from tests.test_inference import IntensityNet, real_model

SPACING = (0.625, 0.625, 1.25)
VIEWS = ["through-plane", "in-plane-1", "in-plane-2"]


def _unet(seed, view="through-plane"):
    torch.manual_seed(seed)
    preprocessing = {**TINY_UNET_PREPROCESSING, "views": [view]}
    model = build_model("unet", preprocessing=preprocessing, **TINY_UNET_KWARGS)
    with torch.no_grad():  # move the weights off their start, differently per seed
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.3)
    return model.eval()


def test_members_disagreement_is_the_doubt_and_the_mask_is_the_predictors():
    ensemble = ensemble_of([_unet(seed, view) for seed, view in zip((1, 2, 3), VIEWS)])
    image, _ = synthetic_case(shape=(40, 36, 20))
    meta = VolumeMeta.from_spacing(image.shape, SPACING)
    predictor = Predictor(ensemble, device="cpu")
    prepared = predictor.prepare(image, meta, roi=RegionOfInterest(box=(2, 38, 3, 33)))
    seen = []
    probability, doubt = doubt_map(predictor, prepared, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(probability, predictor.probabilities(prepared))
    each = [predictor.probabilities(prepared, branches=[b]) for b in range(3)]
    np.testing.assert_allclose(doubt, np.std(each, axis=0), atol=1e-5)
    assert doubt.max() > 0.05  # the members do disagree somewhere
    outside = np.ones(image.shape, bool)
    outside[prepared.index] = False
    assert not doubt[outside].any() and not probability[outside].any()
    assert seen[-1] == (prepared.total, prepared.total)


def test_a_single_network_doubts_where_mirroring_changes_its_answer():
    class Lopsided(torch.nn.Module):  # a left-right asymmetric answer: a ramp across columns
        def forward(self, x):
            ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, -1)
            return x[:, :1] + ramp

    model = real_model(Lopsided(), size=32)
    image = np.random.default_rng(0).uniform(0, 100, (32, 32, 6)).astype(np.float32)
    predictor = Predictor(model, device="cpu")
    prepared = predictor.prepare(image)
    probability, doubt = doubt_map(predictor, prepared)
    np.testing.assert_array_equal(probability, predictor.probabilities(prepared))
    # The mirrored opinion, computed independently: the mirrored volume, mirrored back.
    mirrored = predictor.probabilities(predictor.prepare(np.ascontiguousarray(image[:, ::-1])))
    expected = np.abs(probability - mirrored[:, ::-1]) / 2
    np.testing.assert_allclose(doubt, expected, atol=1e-5)
    assert doubt[:, 0].mean() > doubt[:, 15:17].mean()  # most doubt where the ramp is steepest


def test_a_symmetric_network_has_no_doubt_and_no_slice_to_check():
    model = real_model(IntensityNet(), size=32)
    image = np.random.default_rng(1).uniform(0, 100, (32, 32, 5)).astype(np.float32)
    predictor = Predictor(model, device="cpu")
    _, doubt = doubt_map(predictor, predictor.prepare(image))
    assert np.abs(doubt).max() < 1e-6
    assert rank_slices(np.zeros_like(doubt), 2) == []


def test_slices_are_ranked_by_their_total_doubt():
    doubt = np.zeros((4, 5, 6), np.float32)
    doubt[:, :, 4] = 0.5  # 20 voxels of 0.5
    doubt[0, 0, 1] = 2.0  # one strong voxel (rank_slices takes any non-negative score)
    doubt[1:, :, 2] = 0.2  # 15 voxels of 0.2
    assert rank_slices(doubt, 2) == [4, 2, 1]
    assert rank_slices(doubt, 2, count=2) == [4, 2]
    assert rank_slices(doubt, 0)[0] == 0  # along another axis, the voxel's row wins
