"""Correction by clicks: click maps, windows, the simulated user and the Refiner's one path."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.interactive import Click, ClickModel, Refiner, click_maps, next_click
from napari_la_dinov2.interactive.geometry import to_input, window_index
from napari_la_dinov2.interactive.network import load_click_model
from napari_la_dinov2.interactive.simulate import error_regions
from napari_la_dinov2.volume import VolumeMeta

from .conftest import probabilities, synthetic_case

TINY_VIEWS = dict(
    input_size=32,
    intensity="zscore",
    context=1,
    branches=[
        dict(view="through-plane", fit="pad"),
        dict(view="in-plane-1", fit="stretch"),
        dict(view="in-plane-2", fit="stretch"),
    ],
)
SPACING = (1.0, 1.0, 2.0)


def tiny_segmenter(seed: int = 0):
    import torch

    from napari_la_dinov2 import build_model

    torch.manual_seed(seed)
    model = build_model(
        "unet_ensemble",
        preprocessing=TINY_VIEWS,
        members=3,
        channels=[4, 8],
        strides=[2],
        num_res_units=1,
    )
    return model.eval()


def tiny_refiner(crop: int, window_mm: float = 6.0, seed: int = 0):
    segmenter = tiny_segmenter(seed)
    return segmenter, Refiner(ClickModel.from_segmenter(segmenter, crop=crop, window_mm=window_mm))


@pytest.fixture
def case():
    image, truth = synthetic_case(shape=(40, 36, 14))
    return image, truth, VolumeMeta.from_spacing(image.shape, SPACING)


def test_click_parse_and_refusals():
    assert Click.parse(" 3, 4,5 ", True) == Click((3, 4, 5), True)
    for text in ("", "1,2", "1,2,3,4", "a,b,c", "1.5,2,3"):
        with pytest.raises(InputError, match="three integers"):
            Click.parse(text, False)
    with pytest.raises(InputError, match="outside the volume"):
        Click((0, 0, 14), True).check_inside((40, 36, 14))
    with pytest.raises(InputError, match="outside the volume"):
        Click((-1, 0, 0), False).check_inside((40, 36, 14))


def test_click_maps_peak_at_the_click_and_reach_in_millimetres():
    index = (slice(0, 20), slice(0, 20), slice(0, 10))
    maps = click_maps([Click((5, 6, 4), True), Click((15, 15, 2), False)], index, SPACING)
    assert maps.shape == (2, 20, 20, 10)
    assert maps[0][5, 6, 4] == pytest.approx(1.0)
    assert maps[1][15, 15, 2] == pytest.approx(1.0)
    assert maps[0][15, 15, 2] == 0 and maps[1][5, 6, 4] == 0  # each sign in its own map
    # 2 mm away: one voxel along z (2 mm) equals two voxels along x (1 mm each)
    assert maps[0][5, 6, 5] == pytest.approx(maps[0][7, 6, 4])
    assert maps[0][5, 6, 9] == 0  # 10 mm: beyond the reach of a click
    shifted = click_maps([Click((5, 6, 4), True)], (slice(5, 8), slice(6, 9), slice(4, 6)), SPACING)
    assert shifted[0][0, 0, 0] == pytest.approx(1.0)  # the box's own origin


def test_window_is_millimetres_around_the_click_and_clipped():
    window = window_index((10, 2, 13), (40, 36, 14), SPACING, 6.0)
    assert window == (slice(4, 17), slice(0, 9), slice(10, 14))


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_to_input_matches_the_slice_transform(fit):
    import torch

    from napari_la_dinov2.preprocess import BranchInput, Preprocessing, SliceTransform

    t = SliceTransform(
        Preprocessing(64, "zscore", 0, (BranchInput(fit=fit),)), BranchInput(fit=fit)
    )
    height, width = 40, 24
    for row, col in ((5, 3), (30, 20), (0, 23)):
        one = torch.zeros((1, 1, height, width))
        one[0, 0, row, col] = 1
        fitted = t.fit_maps(one)[0, 0]
        peak = np.unravel_index(int(fitted.argmax()), fitted.shape)
        u, v = to_input(t, height, width, row, col)
        assert abs(peak[0] - u) <= 1.0 and abs(peak[1] - v) <= 1.0


def test_next_click_goes_deepest_into_the_largest_error():
    truth = np.zeros((30, 30, 10), np.uint8)
    truth[5:25, 5:25, 2:8] = 1
    mask = truth.copy()
    mask[5:11, 5:25, 2:8] = 0  # a missed slab: the largest error
    mask[27:29, 27:29, 4:6] = 1  # a small false blob
    regions = error_regions(mask, truth, (1.0, 1.0, 1.0))
    assert [r.positive for r in regions] == [True, False]
    click = next_click(mask, truth, (1.0, 1.0, 1.0))
    assert click.positive and mask[click.position] == 0 and truth[click.position] == 1
    assert 7 <= click.position[0] <= 8 and 2 <= click.position[2] <= 7
    assert next_click(truth, truth, (1.0, 1.0, 1.0)) is None


def test_untrained_click_model_on_the_whole_input_is_the_model_it_was_widened_from(case):
    """The geometry is exact: on an uncropped input, with its new channels at zero, the click
    model gives the segmenter's own probabilities in the click's window."""
    image, truth, meta = case
    segmenter, refiner = tiny_refiner(crop=32)
    expected = probabilities(segmenter, image, meta)
    prepared = refiner.prepare(image, meta)
    click = Click((20, 18, 7), True)
    window = refiner.window(prepared, click)
    got = refiner.window_probability(prepared, truth, [click], window)
    np.testing.assert_allclose(got, expected[window], atol=1e-5)


def test_a_click_changes_nothing_outside_its_window_and_keeps_locked_voxels(case):
    image, truth, meta = case
    _, refiner = tiny_refiner(crop=16)
    prepared = refiner.prepare(image, meta)
    mask = np.zeros_like(truth)
    click = Click((8, 30, 3), True)  # far from the atrium
    out = refiner.refine(prepared, mask, [click])
    window = refiner.window(prepared, click)
    outside = np.ones(mask.shape, bool)
    outside[window] = False
    assert out.dtype == np.uint8 and np.array_equal(out[outside], mask[outside])
    keep = np.zeros(mask.shape, bool)
    keep[window] = True
    assert np.array_equal(refiner.refine(prepared, mask, [click], keep=keep), mask)
    assert np.array_equal(refiner.refine(prepared, mask, []), mask)


def test_refine_refuses_a_mask_on_another_grid_and_a_click_outside_the_region(case):
    from napari_la_dinov2.inference import RegionOfInterest

    image, truth, meta = case
    _, refiner = tiny_refiner(crop=16)
    prepared = refiner.prepare(image, meta)
    with pytest.raises(InputError, match="same grid"):
        refiner.refine(prepared, truth[:-1], [Click((5, 5, 5), True)])
    with pytest.raises(InputError, match="outside the volume"):
        refiner.refine(prepared, truth, [Click((40, 5, 5), True)])
    region = refiner.prepare(image, meta, roi=RegionOfInterest(box=(0, 20, 0, 20)))
    with pytest.raises(InputError, match="outside the segmented region"):
        refiner.refine(region, truth, [Click((30, 5, 5), True)])


def test_click_model_saves_and_loads_only_safetensors_and_json(tmp_path, case):
    image, truth, meta = case
    _, refiner = tiny_refiner(crop=16)
    refiner.model.slice_mm, refiner.model.remove_threshold = 1.25, 0.7
    folder = refiner.model.save(tmp_path / "clicks")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = Refiner(load_click_model(folder))
    assert (loaded.model.slice_mm, loaded.model.remove_threshold) == (1.25, 0.7)
    click = Click((20, 18, 7), False)
    a = refiner.refine(refiner.prepare(image, meta), truth, [click])
    b = loaded.refine(loaded.prepare(image, meta), truth, [click])
    assert np.array_equal(a, b)
    # the thresholds decide: a negative click that removes below 1 removes its whole window
    loaded.model.remove_threshold = 1.0
    window = loaded.window(loaded.prepare(image, meta), click)
    assert not loaded.refine(loaded.prepare(image, meta), truth, [click])[window].any()
    with pytest.raises(InputError, match="holds no click model"):
        load_click_model(tmp_path)


def test_session_keeps_the_users_edits_and_undoes_clicks(case):
    from napari_la_dinov2.interactive import ClickSession

    image, truth, meta = case
    _, refiner = tiny_refiner(crop=16, window_mm=8.0)
    session = ClickSession(refiner, refiner.prepare(image, meta))
    start = truth.copy()
    first, window = session.apply(Click((20, 18, 7), False), start)
    edited = first.copy()
    edited[window][0, 0, 0] = 1 - edited[window][0, 0, 0]  # a brush stroke in the window
    brushed = tuple(s.start for s in window)
    second, _ = session.apply(Click((21, 18, 7), True), edited)
    assert second[brushed] == edited[brushed]  # the next click keeps the user's edit
    undone, _ = session.undo(second)
    assert np.array_equal(undone, edited)  # back to the mask before the second click
    again, _ = session.undo(undone)
    assert again[brushed] == edited[brushed]  # the edit outlives undoing the click
    expected = start.copy()
    expected[brushed] = edited[brushed]
    assert np.array_equal(again, expected)
    assert session.undo(again) is None and session.clicks == []


@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize(
    ("height", "width", "size", "crop"), [(40, 24, 32, 32), (40, 24, 64, 16), (23, 57, 48, 24)]
)
def test_the_crop_plan_gives_the_crop_of_the_whole_slice_inputs(fit, height, width, size, crop):
    """A click computes its crop from the pixels that feed it; the result is the crop of what
    the whole slices would give (shrinking with antialiasing, enlarging, padding, stretching)."""
    import torch

    from napari_la_dinov2.interactive.geometry import CropPlan, network_inputs
    from napari_la_dinov2.preprocess import (
        BranchInput,
        IntensityStats,
        Preprocessing,
        SliceTransform,
    )

    t = SliceTransform(
        Preprocessing(size, "zscore", 1, (BranchInput(fit=fit),)), BranchInput(fit=fit)
    )
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand((3, 3, height, width), generator=generator) * 100
    prompts = torch.rand((3, 3, height, width), generator=generator)
    stats = IntensityStats(5.0, 90.0, 0.5, 0.2)
    for u0, v0 in ((0, 0), (size - crop, max(0, size - crop - 3))):
        plan = CropPlan.around(t, height, width, u0, v0, crop)
        assert (plan.rows.stop - plan.rows.start) * (
            plan.cols.stop - plan.cols.start
        ) <= height * width
        fill = None
        if fit == "pad":
            fill = t.to_unit(raw.amin(dim=(-2, -1), keepdim=True), stats)
        unit = t.to_unit(raw[..., plan.rows, plan.cols], stats)
        image = t.standardize(plan.image(unit, fill), stats)
        maps = plan.maps(prompts[..., plan.rows, plan.cols])
        whole = network_inputs(t, stats, raw, prompts)[..., u0 : u0 + crop, v0 : v0 + crop]
        torch.testing.assert_close(torch.cat([image, maps], dim=1), whole, atol=1e-5, rtol=0)
        logits = torch.rand((3, crop, crop), generator=generator)
        canvas = torch.zeros((3, 1, size, size))
        canvas[:, 0, u0 : u0 + crop, v0 : v0 + crop] = logits
        rows, cols = slice(2, height - 3), slice(1, width - 1)
        expected = t.restore(canvas, height, width)[:, rows, cols]
        torch.testing.assert_close(plan.restore(logits, rows, cols), expected, atol=1e-5, rtol=0)


def test_slices_between_computed_ones_are_interpolated():
    from napari_la_dinov2.interactive.refiner import between_slices, computed_slices

    # 0.625 mm slices at a 1.25 mm step: every other one, the window's last always included
    assert computed_slices(slice(3, 10), 0.625, 1.25).tolist() == [3, 5, 7, 9]
    assert computed_slices(slice(3, 11), 0.625, 1.25).tolist() == [3, 5, 7, 9, 10]
    assert computed_slices(slice(3, 6), 1.25, 1.25).tolist() == [3, 4, 5]
    assert computed_slices(slice(3, 6), 0.625, 0.0).tolist() == [3, 4, 5]
    assert computed_slices(slice(4, 5), 0.625, 1.25).tolist() == [4]
    at = computed_slices(slice(0, 8), 0.625, 1.25)
    line = 2.0 * np.arange(8, dtype=np.float32)[:, None] + np.ones((8, 3), np.float32)
    np.testing.assert_allclose(between_slices(line[at], at, 8), line, rtol=1e-6)


def test_a_stroke_becomes_points_evenly_along_it():
    from napari_la_dinov2.interactive.clicks import stroke_points

    # an L of 40 mm then 20 mm on a 0.5 x 1 x 2 mm grid, a point every 10 mm or a little less
    path = np.array([[0, 0, 0], [80, 0, 0], [80, 20, 0]], float)
    points = stroke_points(path, (0.5, 1.0, 2.0), 10.0)
    assert len(points) == 7
    np.testing.assert_allclose(points[0], path[0])
    np.testing.assert_allclose(points[-1], path[-1])
    np.testing.assert_allclose(points[4], [80, 0, 0])  # 40 mm along: the corner
    steps = np.linalg.norm(np.diff(points, axis=0) * [0.5, 1.0, 2.0], axis=1)
    np.testing.assert_allclose(steps, 10.0)
    assert stroke_points(np.array([[3, 4, 5.0]]), (1, 1, 1), 10.0).tolist() == [[3, 4, 5]]
