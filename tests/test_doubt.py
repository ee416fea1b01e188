"""The model's doubt: members' disagreement (or a single network's mirror disagreement), and
the slices ranked by it."""

from __future__ import annotations

import numpy as np
import torch

from napari_la_dinov2.doubt import doubt_map, rank_slices
from napari_la_dinov2.inference import Predictor, RegionOfInterest
from napari_la_dinov2.models import build_model
from napari_la_dinov2.models.packing import ensemble_of
from napari_la_dinov2.volume_files import VolumeMeta
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


def test_with_the_mask_only_doubt_near_its_surface_counts():
    """Members disagreeing about a structure far from the mask (another chamber) change no
    mask voxel: that slice must not outrank the atrium's doubtful edge."""
    mask = np.zeros((40, 40, 6), bool)
    mask[10:20, 10:20, 1:5] = True  # the atrium on slices 1-4
    doubt = np.zeros(mask.shape, np.float32)
    doubt[25:40, 25:40, 5] = 0.3  # 225 voxels of far doubt on slice 5
    doubt[9:21, 9:21, 3] = 0.3  # the edge of slice 3 (with its inside: 144 voxels)
    doubt[12:18, 12:18, 3] = 0.0  # the atrium's inside is certain
    doubt[9:21, 9:21, 2] = 0.05  # a little doubt on slice 2's edge
    assert rank_slices(doubt, 2)[0] == 5  # by all of the doubt, the far structure wins
    assert rank_slices(doubt, 2, mask=mask) == [3, 2]
    # an empty mask (the model found nothing) ranks by all of the doubt
    assert rank_slices(doubt, 2, mask=np.zeros_like(mask))[0] == 5


def test_the_surface_band_reaches_width_voxels_either_side():
    from napari_la_dinov2.doubt import surface_band

    mask = np.zeros((30, 30, 30), bool)
    mask[10:20, 10:20, 10:20] = True
    band = surface_band(mask, 2)
    line = band[15, :, 15]  # a line through the cube's middle: 8..11 and 18..21 are near
    assert np.flatnonzero(line).tolist() == [8, 9, 10, 11, 18, 19, 20, 21]
    edge = np.zeros((10, 10, 10), bool)
    edge[:4] = True  # a mask touching the volume's border: the border is no surface
    assert not surface_band(edge, 1)[0].any() and surface_band(edge, 1)[3].all()
