"""Slice preparation and its inverse: a mask sent through prepare and restore lands back on the
same pixels, for both fits, odd shapes, and shapes smaller and larger than the model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_la_dinov2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntensityStats,
    SliceTransform,
    with_neighbours,
)

SHAPES = [(37, 53), (101, 67), (150, 211), (64, 64)]


def _transform(fit: str, size=64, channels=1, intensity="zscore", context=0) -> SliceTransform:
    return SliceTransform(
        dict(input_size=size, channels=channels, fit=fit, intensity=intensity, context=context)
    )


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
    prepared = transform.prepare(slices, stats)
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
    z = _transform("pad", channels=1, intensity="zscore").normalize(torch.from_numpy(volume), stats)
    assert z.shape == (4, 1, 30, 30)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)

    rgb = _transform("stretch", channels=3, intensity="imagenet").normalize(
        torch.from_numpy(volume), stats
    )
    assert rgb.shape == (4, 3, 30, 30)
    # the grey level repeated in 3 channels, each with ImageNet's own mean and std
    grey = ((torch.from_numpy(volume) - stats.low) / (stats.high - stats.low)).clamp(0, 1)
    for channel in range(3):
        expected = (grey - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(rgb[:, channel], expected, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [dict(fit="crop"), dict(intensity="minmax"), dict(input_size=8), dict(channels=2)],
)
def test_bad_preprocessing_is_a_value_error(bad):
    with pytest.raises(ValueError):
        SliceTransform({**dict(input_size=64, channels=1, fit="pad", intensity="zscore"), **bad})


@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("intensity, channels", [("zscore", 1), ("imagenet", 3)])
@pytest.mark.parametrize("shape", [(37, 53), (300, 211)])  # enlarged and shrunk (antialiased)
def test_prepare_equals_normalise_then_resize(fit, intensity, channels, shape):
    # prepare resizes the 1-channel image before standardising (cheaper); both steps are
    # affine per pixel and channel, so the result must equal the plain order.
    transform = _transform(fit, size=64, channels=channels, intensity=intensity)
    slices = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (2, *shape)).astype("f4"))
    stats = IntensityStats.of(slices.numpy())
    plain = transform.fit_to_input(transform.normalize(slices, stats))
    assert torch.allclose(transform.prepare(slices, stats), plain, atol=1e-5)


@pytest.mark.parametrize(
    "bad", [dict(context=1, channels=1), dict(context=2, channels=3), dict(context=-1)]
)
def test_context_needs_one_channel_per_slice(bad):
    with pytest.raises(ValueError, match="context|channels"):
        SliceTransform({**dict(input_size=64, channels=1, fit="pad", intensity="zscore"), **bad})


def test_neighbours_repeat_the_edge_slice():
    rows = with_neighbours(0, 4, total=4, context=1)
    assert rows.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert with_neighbours(2, 3, total=4, context=0).tolist() == [[2]]


def test_prepare_of_neighbours_keeps_each_slice_in_its_own_channel():
    # 2.5D: three different slices as channels; each channel must be prepared as that slice
    # alone would be (same window, same fit), so the network sees the true neighbours.
    transform = _transform("pad", size=64, channels=3, intensity="zscore", context=1)
    volume = np.random.default_rng(3).uniform(0, 255, (5, 37, 53)).astype("f4")
    stats = IntensityStats.of(volume)
    rows = transform.neighbours(0, 5, 5)
    stacked = transform.prepare(torch.from_numpy(volume[rows]), stats)
    single = _transform("pad", size=64, channels=1, intensity="zscore")
    alone = single.prepare(torch.from_numpy(volume), stats)  # 5x1x64x64
    assert stacked.shape == (5, 3, 64, 64)
    assert torch.allclose(stacked[:, 1], alone[:, 0], atol=1e-5)  # the centre slice
    assert torch.allclose(stacked[1:, 0], alone[:-1, 0], atol=1e-5)  # the one before
    assert torch.allclose(stacked[0, 0], alone[0, 0], atol=1e-5)  # edge repeated
