"""Slice preparation and its inverse: a mask sent through prepare and restore lands back on the
same pixels, for both fits, odd shapes, and shapes smaller and larger than the model input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_la_dinov2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BranchInput,
    IntensityStats,
    Preprocessing,
    SliceTransform,
    with_neighbours,
)
from tests.conftest import REPO_ROOT

SHAPES = [(37, 53), (101, 67), (150, 211), (64, 64)]


def _transform(fit: str, size=64, intensity="zscore", context=0) -> SliceTransform:
    """The one transform of a single-branch model (channels derived: 1, 3 or 2k+1)."""
    branch = BranchInput(view="through-plane", fit=fit)
    return SliceTransform(Preprocessing(size, intensity, context, (branch,)), branch)


def _standardized(transform: SliceTransform, slices: torch.Tensor, stats) -> torch.Tensor:
    """``BxHxW`` raw -> ``BxCxHxW`` standardised at the slice's own size (no fit)."""
    return transform.standardize(transform.to_unit(slices, stats)[:, None], stats)


def _disc(height: int, width: int) -> np.ndarray:
    """An off-centre ellipse, so a flip, transpose or shift would not map onto itself."""
    rows, cols = np.mgrid[:height, :width]
    return ((rows - 0.35 * height) / (0.22 * height)) ** 2 + (
        (cols - 0.6 * width) / (0.2 * width)
    ) ** 2 <= 1.0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.mark.parametrize("size", [256, 64], ids=["enlarge", "shrink"])
@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("shape", SHAPES)
def test_prepare_then_restore_lands_on_the_same_pixels(fit, shape, size):
    transform = _transform(fit, size=size)
    mask = _disc(*shape)
    x = torch.from_numpy(mask[None, None].astype(np.float32))
    resized = transform.fit_to_input(x, mode="nearest")
    assert resized.shape == (1, 1, size, size)
    # as a model would give it: confident logits of the resized mask
    logits = resized * 20.0 - 10.0
    restored = transform.restore(logits, *shape)
    assert restored.shape == (1, *shape)
    back = restored[0].numpy() > 0
    shift = np.argwhere(back).mean(axis=0) - np.argwhere(mask).mean(axis=0)
    scale = max(shape) / size  # original pixels per model-input pixel
    if scale <= 1:  # the real case (LA slices of ~200 px into 320 or 448): no loss at all
        assert _iou(back, mask) > 0.995
        assert np.abs(shift).max() < 0.05
    else:  # shrinking loses detail, but must not move the mask (no shift, flip, transpose)
        assert _iou(back, mask) > 0.95
        assert np.abs(shift).max() < 0.25 * scale


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_image_prepare_keeps_the_bright_region_in_place(fit):
    # Bilinear (antialiased) path for images: the bright region of the prepared input, mapped
    # back by restore, is where it was.
    shape = (151, 97)
    mask = _disc(*shape)
    slices = torch.from_numpy((20 + 200 * mask)[None].astype(np.float32))
    transform = _transform(fit, size=64)
    stats = IntensityStats.of(slices.numpy())
    prepared = transform.model_input(slices, stats)
    assert prepared.shape == (1, 1, 64, 64) and prepared.dtype == torch.float32
    back = transform.restore(prepared, *shape)[0].numpy()
    threshold = (back.max() + back.min()) / 2
    assert _iou(back > threshold, mask) > 0.93


def test_pad_is_centred_and_filled_with_each_slices_darkest_value():
    transform = _transform("pad", size=100)
    slab = torch.zeros(2, 1, 50, 100)
    slab[0] = torch.linspace(0.2, 1, 100)
    slab[1] = torch.linspace(0.5, 1, 100)
    padded = transform.fit_to_input(slab)
    # a 50x100 slice padded to 100x100 (no resize needed): rows 25..74 hold it unchanged
    assert torch.equal(padded[:, :, 25:75], slab)
    # each slice's own darkest value, whatever else is in the batch
    assert (padded[0, 0, :25] == 0.2).all() and (padded[0, 0, 75:] == 0.2).all()
    assert (padded[1, 0, :25] == 0.5).all() and (padded[1, 0, 75:] == 0.5).all()
    assert torch.equal(transform.fit_to_input(slab[1:]), padded[1:])
    # a mask is padded with background, even where the slice is all foreground
    mask = torch.ones(1, 1, 50, 100, dtype=torch.uint8)
    fitted = transform.fit_to_input(mask, mode="nearest")
    assert fitted.dtype == torch.uint8 and fitted.sum() == 50 * 100 and fitted[0, 0, :25].max() == 0


@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("shape", [(37, 53), (211, 150)])
def test_restore_of_constant_logits_is_constant_on_the_slice_grid(fit, shape):
    transform = _transform(fit, size=64)
    restored = transform.restore(torch.full((3, 1, 64, 64), 2.5), *shape)
    assert restored.shape == (3, *shape)
    assert torch.allclose(restored, torch.full_like(restored, 2.5))


def test_intensity_stats_ignore_outliers():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 100, size=(40, 40, 20)).astype(np.float32)
    volume[0, 0, :5] = 1e6  # a few hot voxels (artefact) ...
    volume[1, 1, :5] = -1e6  # ... and cold ones
    stats = IntensityStats.of(volume)
    assert 0.0 <= stats.low < 1.0 and 99.0 < stats.high <= 100.0
    assert stats.mean == pytest.approx(0.5, abs=0.02)  # uniform on [0, 1] after scaling
    assert stats.std == pytest.approx(np.sqrt(1 / 12), abs=0.02)


def test_intensity_stats_of_a_mostly_constant_volume():
    volume = np.zeros((20, 20, 10), np.float32)
    volume[5, 5, 5] = 10.0  # one bright voxel: percentiles are both 0
    stats = IntensityStats.of(volume)
    assert (stats.low, stats.high) == (0.0, 10.0)
    assert stats.std >= 1e-3


def test_normalisation_zscore_and_imagenet():
    rng = np.random.default_rng(1)
    volume = rng.uniform(0, 255, size=(4, 30, 30)).astype(np.float32)
    stats = IntensityStats.of(volume)
    zscore = _transform("pad", intensity="zscore")
    assert zscore.channels == 1
    z = _standardized(zscore, torch.from_numpy(volume), stats)
    assert z.shape == (4, 1, 30, 30)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)

    imagenet = _transform("stretch", intensity="imagenet")
    assert imagenet.channels == 3
    rgb = _standardized(imagenet, torch.from_numpy(volume), stats)
    assert rgb.shape == (4, 3, 30, 30)
    # the grey level repeated in 3 channels, each with ImageNet's own mean and std
    grey = ((torch.from_numpy(volume) - stats.low) / (stats.high - stats.low)).clamp(0, 1)
    for channel in range(3):
        expected = (grey - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(rgb[:, channel], expected, atol=1e-5)


@pytest.mark.parametrize(
    "bad, phrase",
    [
        (dict(fit="crop"), "fit must be"),
        (dict(intensity="minmax"), "intensity must be"),
        (dict(input_size=8), "input_size must be"),
        (dict(input_size=64.0), "input_size must be"),
        (dict(channels=2), "channels 2 does not fit"),
        (dict(views=["sideways"]), "view must be"),
        (dict(views="through-plane"), "views must be a list"),
        (dict(fits=["pad", "pad"]), "one fit per view"),
        (dict(colour="red"), "unknown preprocessing setting"),
        (dict(branches=[dict(view="through-plane", fit="pad")]), "either branches or"),
    ],
)
def test_bad_preprocessing_is_a_value_error(bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        Preprocessing.from_dict({**dict(input_size=64, fit="pad", intensity="zscore"), **bad})


@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("intensity", ["zscore", "imagenet"])
@pytest.mark.parametrize("shape", [(37, 53), (300, 211)])  # enlarged and shrunk (antialiased)
def test_prepare_equals_normalise_then_resize(fit, intensity, shape):
    # prepare resizes the 1-channel image before standardising (cheaper); both steps are
    # affine per pixel and channel, so the result must equal the plain order.
    transform = _transform(fit, size=64, intensity=intensity)
    slices = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (2, *shape)).astype("f4"))
    stats = IntensityStats.of(slices.numpy())
    plain = transform.fit_to_input(_standardized(transform, slices, stats))
    assert plain.shape == (2, transform.channels, 64, 64)
    assert torch.allclose(transform.model_input(slices, stats), plain, atol=1e-5)


@pytest.mark.parametrize(
    "bad, phrase",
    [
        (dict(context=1, channels=1), "channels 1 does not fit context 1.*which give 3"),
        (dict(context=2, channels=3), "channels 3 does not fit context 2.*which give 5"),
        (dict(context=-1), "context must be an integer in 0..8"),
        (dict(context=9), "context must be an integer in 0..8"),
    ],
)
def test_context_needs_one_channel_per_slice(bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        Preprocessing.from_dict({**dict(input_size=64, fit="pad", intensity="zscore"), **bad})


def test_neighbours_repeat_the_edge_slice():
    rows = with_neighbours(0, 4, total=4, context=1)
    assert rows.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert with_neighbours(2, 3, total=4, context=0).tolist() == [[2]]


def test_prepare_of_neighbours_keeps_each_slice_in_its_own_channel():
    # 2.5D: three different slices as channels; each channel must be prepared as that slice
    # alone would be (same window, same fit), so the network sees the true neighbours.
    transform = _transform("pad", size=64, intensity="zscore", context=1)
    assert transform.channels == 3
    volume = np.random.default_rng(3).uniform(0, 255, (5, 37, 53)).astype("f4")
    stats = IntensityStats.of(volume)
    rows = transform.neighbours(0, 5, 5)
    stacked = transform.model_input(torch.from_numpy(volume[rows]), stats)
    single = _transform("pad", size=64, intensity="zscore")
    alone = single.model_input(torch.from_numpy(volume), stats)  # 5x1x64x64
    assert stacked.shape == (5, 3, 64, 64)
    assert torch.allclose(stacked[:, 1], alone[:, 0], atol=1e-5)  # the centre slice
    assert torch.allclose(stacked[1:, 0], alone[:-1, 0], atol=1e-5)  # the one before
    assert torch.allclose(stacked[0, 0], alone[0, 0], atol=1e-5)  # edge repeated


def test_standardisation_by_hand():
    # A window of [10, 20] and a z-score of mean 0.5 / std 0.25, worked out by hand:
    # 15 -> 0.5 -> 0; 25 -> clipped to 1 -> 2; 0 -> clipped to 0 -> -2; 12.5 -> 0.25 -> -1.
    stats = IntensityStats(low=10.0, high=20.0, mean=0.5, std=0.25)
    raw = torch.tensor([[[15.0, 25.0], [0.0, 12.5]]])
    z = _standardized(_transform("pad", intensity="zscore"), raw, stats)
    assert z.tolist() == [[[[0.0, 2.0], [-2.0, -1.0]]]]
    # ImageNet: the grey 0.5 in each channel, (0.5 - mean_c) / std_c
    rgb = _standardized(_transform("pad", intensity="imagenet"), raw[:, :1, :1], stats)
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert rgb.flatten().tolist() == pytest.approx(expected, abs=1e-6)


# --- the typed preprocessing -----------------------------------------------------------------


def _format1_preprocessing() -> dict:
    """The embedded model's preprocessing as its format-1 checkpoint stated it."""
    config = json.loads(
        (REPO_ROOT / "tests/data/checkpoint_format1_config.json").read_text(encoding="utf-8")
    )
    assert config["format"] == "napari-la-dinov2/1"
    return config["preprocessing"]


def test_from_dict_converts_the_format1_settings_to_branches():
    old = _format1_preprocessing()
    assert {"fit", "fits", "views", "channels"} <= set(old)  # the legacy keys, all of them
    made = Preprocessing.from_dict(old)
    assert made == Preprocessing(
        input_size=192,
        intensity="zscore",
        context=1,
        branches=(
            BranchInput("through-plane", "pad"),
            BranchInput("in-plane-1", "stretch"),
            BranchInput("in-plane-2", "stretch"),
        ),
    )
    assert made.channels == 3 == old["channels"]  # 2k+1 with k = 1
    # today's form goes back to the same object, and has no channels to disagree
    assert made.to_dict() == dict(
        input_size=192,
        intensity="zscore",
        context=1,
        branches=[
            dict(view="through-plane", fit="pad"),
            dict(view="in-plane-1", fit="stretch"),
            dict(view="in-plane-2", fit="stretch"),
        ],
    )
    assert Preprocessing.from_dict(made.to_dict()) == made
    # one transform per branch, in order, each with its own view and fit
    assert [(t.view, t.fit, t.channels) for t in made.transforms()] == [
        ("through-plane", "pad", 3),
        ("in-plane-1", "stretch", 3),
        ("in-plane-2", "stretch", 3),
    ]


def test_from_dict_legacy_fit_applies_to_every_view():
    made = Preprocessing.from_dict(
        dict(
            input_size=64, intensity="zscore", fit="stretch", views=["in-plane-2", "through-plane"]
        )
    )
    assert made.branches == (
        BranchInput("in-plane-2", "stretch"),
        BranchInput("through-plane", "stretch"),
    )
    assert Preprocessing.from_dict(dict(input_size=64, intensity="zscore")).branches == (
        BranchInput("through-plane", "pad"),
    )


def test_a_channels_that_disagrees_is_refused_with_a_sentence():
    old = {**_format1_preprocessing(), "channels": 1}  # but context 1 gives 3
    with pytest.raises(ValueError) as caught:
        Preprocessing.from_dict(old)
    message = str(caught.value)
    assert message == (
        "channels 1 does not fit context 1 and zscore intensities, which give 3; leave channels out"
    )


@pytest.mark.parametrize(
    "intensity, context, channels",
    [("zscore", 0, 1), ("imagenet", 0, 3), ("zscore", 1, 3), ("imagenet", 1, 3), ("zscore", 8, 17)],
)
def test_channels_are_derived(intensity, context, channels):
    assert Preprocessing(64, intensity, context).channels == channels


def test_updated_applies_a_partial_mapping():
    base = Preprocessing(64, "zscore")
    assert base.channels == 1
    with_context = base.updated({"context": 1})
    assert with_context.channels == 3 and with_context.context == 1
    assert (with_context.input_size, with_context.branches) == (64, base.branches)
    assert base.context == 0  # a copy: the original is untouched
    assert base.updated(None) is base and base.updated({}) is base
    # views alone keep the fit where they can; a new count of views repeats the first fit
    stretched = base.updated({"fit": "stretch"})
    assert stretched.branches == (BranchInput("through-plane", "stretch"),)
    two = stretched.updated({"views": ["in-plane-1", "in-plane-2"]})
    assert two.branches == (
        BranchInput("in-plane-1", "stretch"),
        BranchInput("in-plane-2", "stretch"),
    )
    with pytest.raises(ValueError, match="channels 1 does not fit"):
        base.updated({"context": 1, "channels": 1})


def test_preprocessing_is_frozen():
    made = Preprocessing(64, "zscore")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.context = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.branches[0].fit = "stretch"
    assert hash(made) == hash(Preprocessing(64, "zscore"))  # usable as a key


def test_imagenet_with_a_wide_context_is_refused():
    # Three ImageNet means and deviations: five slices as channels have no normalisation.
    with pytest.raises(ValueError, match="ImageNet intensities take 3 channels"):
        Preprocessing.from_dict(dict(input_size=32, intensity="imagenet", context=2))


def test_flags_and_lists_are_not_taken_for_numbers_and_tuples():
    with pytest.raises(ValueError, match="context must be an integer"):
        Preprocessing.from_dict(dict(input_size=32, intensity="zscore", context=True))
    listed = Preprocessing(32, "zscore", branches=[BranchInput()])
    assert listed == Preprocessing(32, "zscore") and hash(listed) == hash(
        Preprocessing(32, "zscore")
    )
