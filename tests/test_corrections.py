"""Corrections that teach: the slices a user changed weigh more than the model's own guess,
earlier cases are replayed at their share, and a quick round is a preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import get_spec, load_model
from napari_la_dinov2.preprocess import Preprocessing
from napari_la_dinov2.training import Case, TrainConfig, finetune
from napari_la_dinov2.training.events import EpochDone, StepDone
from napari_la_dinov2.training.slices import PreparedCase, SliceSampler
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import (
    TINY_UNET_KWARGS,
    TINY_UNET_PREPROCESSING,
    synthetic_case,
    tiny_unet_config,
)

SHAPE = (40, 36, 10)


def _case(name, seed=0, corrected_slices=(), replay=False):
    image, mask = synthetic_case(SHAPE, seed=seed)
    prediction = mask.copy()
    for z in corrected_slices:  # the model had missed the atrium on these slices
        prediction[:, :, z] = 0
    return Case(
        name,
        image,
        mask,
        VolumeMeta.from_spacing(SHAPE, (0.625, 0.625, 1.25)),
        prediction=prediction if corrected_slices else None,
        replay=replay,
    )


def _prepared(case, view="through-plane"):
    preprocessing = Preprocessing.from_dict(
        {**TINY_UNET_PREPROCESSING, "intensity": "zscore", "views": [view]}
    )
    return PreparedCase.of(case, preprocessing.transforms()[0])


def test_the_corrected_slices_are_found_along_each_view():
    case = _case("a", corrected_slices=(3, 4))
    assert _prepared(case).corrected.tolist() == [3, 4]
    across = _prepared(case, "in-plane-1").corrected  # x slices that cross the atrium there
    mask_x = np.flatnonzero(case.labels[:, :, 3:5].any(axis=(1, 2)))
    assert across.tolist() == mask_x.tolist()
    assert _prepared(_case("b")).corrected.size == 0  # no prediction: nothing corrected


def test_corrected_slices_are_drawn_as_often_as_their_weight_says():
    prepared = [_prepared(_case("a", corrected_slices=(2,)))]
    sampler = SliceSampler(prepared, foreground_fraction=0.0, correction_weight=4.0)
    picks = sampler.epoch(np.random.default_rng(0), 40_000)
    counts = np.bincount([s for _, s in picks], minlength=SHAPE[2])
    untouched = np.delete(counts, 2).mean()
    assert counts[2] / untouched == pytest.approx(4.0, rel=0.1)


def test_replayed_cases_take_their_share_of_the_draw():
    prepared = [
        _prepared(_case("new", corrected_slices=(2,))),
        _prepared(_case("old1", 1, replay=True)),
        _prepared(_case("old2", 2, replay=True)),
    ]
    sampler = SliceSampler(
        prepared, foreground_fraction=0.6, correction_weight=4.0, replay_share=0.25
    )
    picks = sampler.epoch(np.random.default_rng(1), 40_000)
    replayed = np.mean([c > 0 for c, _ in picks])
    assert replayed == pytest.approx(0.25, abs=0.02)


def test_a_round_with_corrections_and_replay_records_both(tmp_path):
    config = tiny_unet_config(tmp_path / "round", epochs=1, steps_per_epoch=2, batch_size=4)
    corrected = _case("today", corrected_slices=(4, 5))
    earlier = [_case("monday", 1), _case("tuesday", 2)]
    result = finetune([corrected], config, replay=earlier)
    split = json.loads((tmp_path / "round" / "split.json").read_text(encoding="utf-8"))
    assert split["train"] == ["today"] and split["replay"] == ["monday", "tuesday"]
    tuned = load_model(result.best_checkpoint)
    assert tuned.provenance["trained_on"] == ["today", "monday", "tuesday"]
    assert tuned.provenance["this_run"]["validated_on"] == []  # validated on 'today' itself
    assert result.history[0]["val_dice"] >= 0  # validation ran on the corrected case


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_norm_statistics_stay_while_the_weights_learn(tmp_path, frozen):
    """A round on one case must not replace the BatchNorm statistics the model was trained
    with by that case's (freeze_norm_stats, on in the quick round)."""
    config = tiny_unet_config(
        tmp_path / "round",
        epochs=2,
        steps_per_epoch=2,
        batch_size=4,
        lr=1e-3,
        freeze_norm_stats=frozen,
    )
    result = finetune([_case("today", corrected_slices=(4,))], config)
    learned, stats_kept = _weights_learned_and_norm_stats_kept(config, result)
    assert learned and stats_kept == frozen


def _weights_learned_and_norm_stats_kept(config, result) -> tuple[bool, bool]:
    """Whether a tiny-UNet run changed its convolution weights, and whether it kept its
    BatchNorm statistics, against the weights it started from."""
    torch.manual_seed(config.seed)  # the weights the run started from
    start = load_model(
        "unet", pretrained=False, preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS
    ).state_dict()
    tuned = load_model(result.last_checkpoint).state_dict()
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in start if k.endswith("conv.weight")]
    assert stats and weights
    learned = any(not torch.equal(start[k], tuned[k]) for k in weights)
    return learned, all(torch.equal(start[k], tuned[k]) for k in stats)


def test_a_quick_round_is_one_short_gentle_epoch_on_the_corrections(tmp_path):
    """The preset of a correction round: one epoch of a few steps, at a learning rate below
    the family's own, the corrected slices weighted, earlier cases replayed, the BatchNorm
    statistics kept; the settings given win over the preset."""
    quick = TrainConfig.quick_round(
        model="unet",
        model_kwargs=TINY_UNET_KWARGS,
        preprocessing=TINY_UNET_PREPROCESSING,
        device="cpu",
        output_dir=str(tmp_path / "round"),
    )
    family = get_spec("unet").training
    assert quick.resolved(family).lr < family["lr"] and quick.epochs < family["epochs"]
    assert quick.correction_weight > 1 and 0 < quick.replay_share < 1
    assert TrainConfig.quick_round(epochs=3, lr=1e-3).epochs == 3
    events = []
    result = finetune(
        [_case("today", corrected_slices=(4,))],
        quick,
        replay=[_case("monday", 1)],
        progress=events.append,
    )
    steps = [e for e in events if isinstance(e, StepDone)]
    assert len(result.history) == 1 and sum(isinstance(e, EpochDone) for e in events) == 1
    assert 0 < len(steps) <= 50 and {e.epoch for e in steps} == {1}
    learned, stats_kept = _weights_learned_and_norm_stats_kept(quick, result)
    assert learned and stats_kept


def test_bad_correction_settings_are_refused():
    with pytest.raises(InputError, match="correction_weight must be >= 1"):
        TrainConfig(correction_weight=0.5, epochs=1, batch_size=1, lr=1e-3).resolved({})
