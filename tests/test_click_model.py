"""The embedded click model on a real patient neither it nor the default model ever saw: a
protocol click corrects the automatic mask, a click where the mask is right changes (almost)
nothing, and nothing changes outside the clicked window."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.interactive import Click, Refiner, load_click_model, next_click
from napari_la_dinov2.interactive.network import EMBEDDED
from napari_la_dinov2.models import load_model
from napari_la_dinov2.scoring.metrics import dice
from napari_la_dinov2.volume_files import read_volume


@pytest.fixture(scope="module")
def unseen_case(real_data_dir, real_case_ids):
    default = load_model("default")
    name = default.unseen(real_case_ids)[0]
    image, meta = read_volume(real_data_dir / "images" / f"{name}.nii.gz")
    truth, _ = read_volume(real_data_dir / "labels" / f"{name}.nii.gz")
    auto = Predictor(default, device="cpu").predict(image, meta)
    refiner = Refiner()
    return image, meta, (truth > 0).astype(np.uint8), auto, refiner, refiner.prepare(image, meta)


def _outside(shape, window) -> np.ndarray:
    outside = np.ones(shape, bool)
    outside[window] = False
    return outside


def test_the_embedded_click_model_is_trained_on_the_defaults_patients_as_its_card_says():
    model = load_click_model()
    default = load_model("default")
    assert model.provenance["trained_on"] == default.provenance["trained_on"]
    # the model card states what the shipped config holds
    card = " ".join((EMBEDDED / "MODEL_CARD.md").read_text(encoding="utf-8").split())
    assert f"({model.window_mm:g} mm on either side of the click" in card
    assert f"on a {model.crop} x {model.crop} crop" in card
    assert f"one every {model.slice_mm:g} mm" in card
    assert (
        f"above {model.add_threshold:g}, a negative one removes those below {model.remove_threshold:g}"
        in card
    )
    for run in model.provenance["runs"]:
        assert f"{run['steps']} steps, {model.window_mm:g} mm, slices {model.slice_mm:g} mm" in card


def test_a_protocol_click_corrects_the_automatic_mask_only_near_it(unseen_case):
    image, meta, truth, auto, refiner, prepared = unseen_case
    click = next_click(auto, truth, meta.spacing)
    refined = refiner.refine(prepared, auto, [click])
    assert dice(refined, truth) > dice(auto, truth)
    outside = _outside(auto.shape, refiner.window(prepared, click))
    assert np.array_equal(refined[outside], auto[outside])


def test_a_click_where_the_mask_is_right_changes_almost_nothing(unseen_case):
    image, meta, truth, auto, refiner, prepared = unseen_case
    inside = np.argwhere((auto == 1) & (truth == 1))
    centre = tuple(int(v) for v in inside[len(inside) // 2])
    refined = refiner.refine(prepared, auto, [Click(centre, True)])
    window = refiner.window(prepared, Click(centre, True))
    changed = int((refined != auto).sum())
    assert changed <= 0.02 * auto[window].size  # a positive click adds at a lower bar (0.25)
    assert dice(refined, truth) > dice(auto, truth) - 0.005  # and harms nothing measurable
    assert np.array_equal(refined[_outside(auto.shape, window)], auto[_outside(auto.shape, window)])
