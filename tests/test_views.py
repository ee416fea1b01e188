"""Views: models that cut the volume along another axis, and multi-view ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.inference import Predictor, RegionOfInterest
from napari_la_dinov2.models import build_model, load_checkpoint, save_checkpoint
from napari_la_dinov2.models.packing import ensemble_of
from napari_la_dinov2.preprocess import view_axis
from napari_la_dinov2.scoring.metrics import dice
from napari_la_dinov2.training import Case, TrainConfig, finetune
from napari_la_dinov2.training.slices import PreparedCase
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import (
    TINY_UNET_KWARGS,
    TINY_UNET_PREPROCESSING,
    probabilities,
    synthetic_case,
)

SPACING = (0.625, 0.625, 1.25)  # as the LA 2018 scans: z is the through-plane axis
THREE_VIEWS = ["through-plane", "in-plane-1", "in-plane-2"]


def _unet(seed: int, view: str | None = None, fit: str = "pad"):
    torch.manual_seed(seed)
    preprocessing = {**TINY_UNET_PREPROCESSING, "fit": fit}
    if view is not None:
        preprocessing["views"] = [view]
    return build_model("unet", preprocessing=preprocessing, **TINY_UNET_KWARGS).eval()


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_views_are_named_relative_to_the_acquisition_not_the_array_order():
    assert [view_axis(2, v) for v in THREE_VIEWS] == [2, 0, 1]  # (x, y, z): axial, sag, cor
    assert [view_axis(0, v) for v in THREE_VIEWS] == [0, 1, 2]  # stored (z, y, x)
    assert [view_axis(1, v) for v in THREE_VIEWS] == [1, 0, 2]
    with pytest.raises(ValueError, match="view must be one of"):
        view_axis(2, "sagittal")


def test_a_view_model_sees_what_a_copy_with_that_slice_axis_would_show():
    # How the shipped sagittal member was trained: the same voxels with an affine that makes
    # x the coarsest axis. A model told its view must give the very same probabilities.
    image, _ = synthetic_case(shape=(40, 36, 20))
    sagittal = _unet(3, "in-plane-1")
    through = _unet(3)  # the same weights, cutting along the slice axis of the copy
    predictor = Predictor(sagittal, device="cpu")
    view = predictor.prepare(image, VolumeMeta.from_spacing(image.shape, SPACING))
    copy = Predictor(through, device="cpu").prepare(
        image, VolumeMeta.from_spacing(image.shape, (2.0, 0.625, 1.25))
    )
    assert (view.slice_axis, copy.slice_axis) == (2, 0)  # cleaned in the acquisition plane
    assert view.axes == copy.axes == (0,)
    np.testing.assert_allclose(
        predictor.probabilities(view),
        Predictor(through, device="cpu").probabilities(copy),
        atol=1e-6,
    )
    prepared = PreparedCase.of(
        Case("c", image, image > 100, VolumeMeta.from_spacing(image.shape, SPACING)),
        predictor.branches[0].transform,
    )
    assert prepared.images.shape[0] == 40  # training cuts the same slices


def test_a_multi_view_ensemble_averages_the_logits_of_its_views(tmp_path):
    members = [_unet(seed, view) for seed, view in zip((1, 2, 3), THREE_VIEWS, strict=True)]
    ensemble = ensemble_of(members)
    assert list(ensemble.preprocessing.views) == THREE_VIEWS
    image, _ = synthetic_case(shape=(40, 36, 20))
    meta = VolumeMeta.from_spacing(image.shape, SPACING)
    seen = []
    predictor = Predictor(ensemble, device="cpu")
    together = predictor.probabilities(
        predictor.prepare(image, meta), progress=lambda done, total: seen.append((done, total))
    )
    each = [probabilities(m, image, meta) for m in members]
    expected = 1 / (1 + np.exp(-np.mean([_logit(p) for p in each], axis=0)))
    np.testing.assert_allclose(together, expected, atol=1e-4)
    assert seen[-1] == (20 + 40 + 36, 20 + 40 + 36)  # every view's slices are counted

    save_checkpoint(ensemble, tmp_path / "views")
    loaded = load_checkpoint(tmp_path / "views")
    assert list(loaded.preprocessing.views) == THREE_VIEWS
    np.testing.assert_array_equal(probabilities(loaded, image, meta), together)


def test_members_of_a_multi_view_ensemble_keep_their_own_fit(tmp_path):
    # The in-plane members may stretch their short through-plane axis while the axial one pads.
    fits = ["pad", "stretch", "stretch"]
    members = [_unet(s, v, f) for s, v, f in zip((1, 2, 3), THREE_VIEWS, fits, strict=True)]
    ensemble = ensemble_of(members)
    assert [b.fit for b in ensemble.preprocessing.branches] == fits
    image, _ = synthetic_case(shape=(40, 36, 20))
    meta = VolumeMeta.from_spacing(image.shape, SPACING)
    predictor = Predictor(ensemble, device="cpu")
    assert [b.transform.fit for b in predictor.branches] == fits
    together = probabilities(ensemble, image, meta)
    each = [probabilities(m, image, meta) for m in members]
    expected = 1 / (1 + np.exp(-np.mean([_logit(p) for p in each], axis=0)))
    np.testing.assert_allclose(together, expected, atol=1e-4)
    padded = ensemble_of([_unet(s, v) for s, v in zip((1, 2, 3), THREE_VIEWS, strict=True)])
    other = probabilities(padded, image, meta)
    assert np.abs(other - together).max() > 1e-3  # the fit does change the in-plane input

    save_checkpoint(ensemble, tmp_path / "fits")
    loaded = load_checkpoint(tmp_path / "fits")
    assert [b.fit for b in loaded.preprocessing.branches] == fits
    np.testing.assert_array_equal(probabilities(loaded, image, meta), together)


def test_fits_that_do_not_match_the_views_are_refused():
    with pytest.raises(InputError, match="fits must name one fit per view .3."):
        build_model(
            "unet_ensemble",
            preprocessing={"views": THREE_VIEWS, "fits": ["pad", "stretch"]},
            members=3,
            **TINY_UNET_KWARGS,
        )
    with pytest.raises(InputError, match="fit must be 'pad' or 'stretch', not 'crop'"):
        build_model(
            "unet_ensemble",
            preprocessing={"views": THREE_VIEWS[:2], "fits": ["pad", "crop"]},
            members=2,
            **TINY_UNET_KWARGS,
        )
    with pytest.raises(InputError, match="members of one view must fit their slices alike"):
        ensemble_of([_unet(1), _unet(2, fit="stretch")])


def test_a_multi_view_ensemble_segments_only_inside_the_region_of_interest():
    ensemble = ensemble_of([_unet(seed, v) for seed, v in zip((1, 2, 3), THREE_VIEWS, strict=True)])
    image, _ = synthetic_case(shape=(48, 44, 20))
    meta = VolumeMeta.from_spacing(image.shape, SPACING)
    roi = RegionOfInterest(box=(4, 40, 6, 38), slices=(2, 18))
    inside = (slice(4, 40), slice(6, 38), slice(2, 18))
    in_roi = probabilities(ensemble, image, meta, roi=roi)
    cropped = probabilities(ensemble, image[inside], meta)
    np.testing.assert_allclose(in_roi[inside], cropped, atol=1e-6)
    outside = np.ones(image.shape, dtype=bool)
    outside[inside] = False
    assert not in_roi[outside].any()


def test_views_that_do_not_fit_the_network_are_refused():
    with pytest.raises(InputError, match="view must be one of"):
        build_model("unet", preprocessing={"views": ["sagittal"]}, **TINY_UNET_KWARGS)
    with pytest.raises(InputError, match="2 views but the 'unet' network has no members"):
        build_model("unet", preprocessing={"views": THREE_VIEWS[:2]}, **TINY_UNET_KWARGS)
    with pytest.raises(InputError, match="3 views but the 'unet_ensemble' network has 2"):
        build_model(
            "unet_ensemble", preprocessing={"views": THREE_VIEWS}, members=2, **TINY_UNET_KWARGS
        )
    with pytest.raises(InputError, match="itself multi-view"):
        ensemble_of([ensemble_of([_unet(1, "in-plane-1"), _unet(2)])])
    with pytest.raises(InputError, match="2 views given for 1 members"):
        ensemble_of([_unet(1)], views=THREE_VIEWS[:2])


def test_a_multi_view_ensemble_fine_tunes_each_member_on_its_own_view(tmp_path, monkeypatch):
    cases = []
    for seed in range(3):
        image, mask = synthetic_case(shape=(40, 36, 12), seed=seed)
        cases.append(Case(f"c{seed}", image, mask, VolumeMeta.from_spacing(image.shape, SPACING)))
    views_cut = []
    original = PreparedCase.of.__func__

    def record(cls, case, transform):
        views_cut.append((transform.view, transform.fit))
        return original(cls, case, transform)

    monkeypatch.setattr(PreparedCase, "of", classmethod(record))
    config = TrainConfig(
        model="unet_ensemble",
        model_kwargs={**TINY_UNET_KWARGS, "members": 2},
        preprocessing={
            **TINY_UNET_PREPROCESSING,
            "views": THREE_VIEWS[:2],
            "fits": ["pad", "stretch"],
        },
        epochs=6,
        steps_per_epoch=8,
        batch_size=8,
        lr=3e-3,
        loss="bce_dice",
        augment=False,
        device="cpu",
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    torch.manual_seed(0)
    before = ensemble_of([_unet(9), _unet(9, "in-plane-1")])  # an untrained pair, for scale
    untrained = dice(
        Predictor(before, device="cpu").predict(cases[2].image, cases[2].meta), cases[2].labels
    )
    result = finetune(cases[:2], config, val_cases=cases[2:])
    # Each member its own slices, fitted its own way.
    assert views_cut == [("through-plane", "pad")] * 2 + [("in-plane-1", "stretch")] * 2
    trained = load_checkpoint(result.best_checkpoint)
    assert list(trained.preprocessing.views) == THREE_VIEWS[:2]
    assert [b.fit for b in trained.preprocessing.branches] == ["pad", "stretch"]
    for member, view, fit in zip(
        trained.net.members, THREE_VIEWS[:2], ("pad", "stretch"), strict=True
    ):
        alone = _unet(0, view, fit)
        alone.net.load_state_dict(member.state_dict())
        mask = Predictor(alone, device="cpu").predict(cases[2].image, cases[2].meta)
        assert dice(mask, cases[2].labels) > 0.7, view  # each member learnt from its view
    assert result.best_val_dice > max(0.7, untrained + 0.3)


def test_the_command_line_trains_and_segments_with_a_multi_view_model(tmp_path, capsys):
    from napari_la_dinov2.cli import main
    from tests.test_distributed import tiny_unet_config, write_case_folder

    cases = write_case_folder(tmp_path / "cases", 2)
    config = tiny_unet_config(tmp_path / "cfg.yaml", epochs=1)
    out = tmp_path / "run"
    views = "preprocessing.views=[through-plane, in-plane-1, in-plane-2]"
    args = ["train", "--cases", str(cases), "--config", str(config), "--out", str(out)]
    assert main([*args, "--set", "model=unet_ensemble", "model_kwargs.members=3", views]) == 0
    trained = load_checkpoint(out / "best")
    assert list(trained.preprocessing.views) == THREE_VIEWS and len(trained.net.members) == 3

    image = cases / "images" / "case0.nii.gz"
    mask = tmp_path / "mask.nii.gz"
    assert main(["segment", str(image), "-o", str(mask), "--checkpoint", str(out / "best")]) == 0
    assert mask.is_file()
    capsys.readouterr()
    bad = [*args[:-1], str(tmp_path / "bad"), "--set"]
    assert main([*bad, views]) == 2
    assert "3 views but the 'unet' network has no members" in capsys.readouterr().err
    assert main([*bad, "model_kwargs.members=3"]) == 2  # a setting of another model
    assert "model_kwargs do not fit the 'unet' model" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_frozen_dinov2_on_another_view_caches_and_validates_that_view(tiny_dinov2, tmp_path):
    from napari_la_dinov2.preprocess import BranchInput
    from napari_la_dinov2.training.feature_cache import FeatureCache
    from napari_la_dinov2.training.finetune import evaluate, validate
    from napari_la_dinov2.training.token_batches import TokenBatches

    coronal = tiny_dinov2.preprocessing.with_branches([BranchInput("in-plane-2", "stretch")])
    model = type(tiny_dinov2)("dinov2_vits14", tiny_dinov2.config_dict()["model_kwargs"], coronal)
    model.load_state_dict(tiny_dinov2.state_dict())
    checkpoint = save_checkpoint(model, tmp_path / "tiny")
    cases = []
    for seed in range(3):
        image, mask = synthetic_case(shape=(40, 36, 8), seed=seed)
        cases.append(Case(f"c{seed}", image, mask, VolumeMeta.from_spacing(image.shape, SPACING)))
    config = TrainConfig(
        model=str(checkpoint),
        epochs=1,
        batch_size=4,
        steps_per_epoch=2,
        lr=1e-3,
        output_dir=str(tmp_path / "run"),
        device="cpu",
    )
    result = finetune(cases[:2], config, val_cases=cases[2:], cache=FeatureCache())
    trained = load_checkpoint(result.best_checkpoint)
    assert trained.preprocessing.views == ("in-plane-2",)
    predictor = Predictor(trained, device="cpu", batch_size=16)
    batches = TokenBatches(
        predictor,
        cases[:1],
        cases[2:],
        cache=FeatureCache(),
        flips=False,
        generator=torch.Generator(),
        sampling={},
    )
    tokens = batches.val_tokens["c2"]
    assert tokens.shape[0] == 36  # cut across y: one token map per coronal slice
    cached = evaluate(predictor, cases[2:], batches)
    assert cached == pytest.approx(validate(trained, cases[2:], "cpu"), abs=0.01)
    assert cached == pytest.approx(result.best_val_dice, abs=1e-6)
