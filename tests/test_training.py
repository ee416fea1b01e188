"""Fine-tuning: a short real training learns, the DINOv2 path trains end to end, and stopping,
resuming, killing and bad cases behave."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from napari_la_dinov2.errors import CancelledError, InputError
from napari_la_dinov2.models import load_model, save_checkpoint
from napari_la_dinov2.training import (
    Case,
    TrainConfig,
    cases_from_arrays,
    finetune,
    load_case_folder,
    validate,
)
from napari_la_dinov2.training.events import EpochDone, StepDone
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import (
    TINY_UNET_KWARGS,
    TINY_UNET_PREPROCESSING,
    synthetic_case,
    tiny_unet_config,
)


def _config(tmp_path, name: str = "run", **settings) -> TrainConfig:
    """The tiny UNet trained at lr 1e-3 into ``tmp_path / name``; the rest per test."""
    return tiny_unet_config(tmp_path / name, lr=1e-3, **settings)


def _case(name, seed=0, shape=(40, 36, 6)):
    image, mask = synthetic_case(shape, seed=seed)
    return Case(name, image, mask, VolumeMeta.from_spacing(shape))


@pytest.mark.realdata
@pytest.mark.slow
def test_short_real_training_learns_the_atrium(real_data_dir, real_case_ids, tmp_path):
    """4 real patients cropped to the 24 slices around the atrium; 3 train, 1 validates."""
    cases = []
    for case in load_case_folder(real_data_dir, names=real_case_ids[:4]):
        z = np.flatnonzero(case.labels.any(axis=(0, 1)))
        middle = (z[0] + z[-1]) // 2
        crop = slice(middle - 12, middle + 12)
        cases.append(Case(case.name, case.image[..., crop], case.labels[..., crop], case.meta))
    kwargs = dict(channels=[8, 16, 32, 64], strides=[2, 2, 2], num_res_units=1)
    torch.manual_seed(0)
    untrained = load_model("unet", preprocessing={"input_size": 64}, **kwargs)
    untrained_dice = validate(untrained, cases[3:], "cpu")
    config = TrainConfig(
        model="unet",
        model_kwargs=kwargs,
        preprocessing={"input_size": 64},
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
    result = finetune(cases[:3], config, val_cases=cases[3:])
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.best_val_dice >= 0.7 and result.best_val_dice > untrained_dice + 0.3
    best = load_model(result.best_checkpoint)
    assert validate(best, cases[3:], "cpu") == pytest.approx(result.best_val_dice, abs=1e-6)
    assert best.provenance["trained_on"] == [c.name for c in cases[:3]]


def test_dinov2_trains_end_to_end(tiny_dinov2, tmp_path):
    checkpoint = save_checkpoint(tiny_dinov2, tmp_path / "tiny")
    config = TrainConfig(
        model=str(checkpoint),
        freeze_backbone=False,
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        lr=1e-3,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    result = finetune([_case("a", 0), _case("b", 1)], config)
    trained = load_model(result.best_checkpoint)
    assert trained.net.freeze_backbone is False
    before = dict(tiny_dinov2.net.backbone.named_parameters())
    changed = [
        name
        for name, p in trained.net.backbone.named_parameters()
        if not torch.equal(p, before[name])
    ]
    assert len(changed) > 10  # the backbone learned, not only the head
    import json

    assert (
        json.loads((result.run_dir / "config.json").read_text(encoding="utf-8"))[
            "feature_cache_used"
        ]
        is False
    )


def test_stop_from_progress_keeps_the_best_checkpoint(tmp_path):
    stop = threading.Event()
    seen = []

    def progress(event):
        seen.append(event)
        if isinstance(event, StepDone) and event.epoch == 2:
            stop.set()

    config = _config(tmp_path, epochs=20, steps_per_epoch=3, batch_size=4)
    result = finetune([_case("a"), _case("b", 1)], config, progress=progress, stop=stop)
    # The stop lands after the first step of epoch 2; that epoch's validation is cancelled
    # too, so the checkpoint of epoch 1 stays the best (and only) one.
    assert result.stopped and len(result.history) == 1
    assert [e.step for e in seen if isinstance(e, StepDone) and e.epoch == 2] == [1]
    best = load_model(result.best_checkpoint)
    assert best.provenance["epoch"] == 1
    assert best.provenance["val_dice"] == pytest.approx(result.best_val_dice)


def test_resume_continues_from_last(tmp_path):
    cases = [_case("a"), _case("b", 1)]
    config = _config(tmp_path, epochs=2, steps_per_epoch=2, batch_size=4)
    first = finetune(cases, config)
    config.epochs, config.resume = 4, True
    second = finetune(cases, config)
    assert [row["epoch"] for row in second.history] == [1, 2, 3, 4]
    for key in ("train_loss", "val_dice"):  # the first two epochs are kept as they were
        assert [r[key] for r in second.history[:2]] == pytest.approx(
            [r[key] for r in first.history]
        )
    assert load_model(second.last_checkpoint).provenance["epoch"] == 4


def _rates_per_step(run) -> list[float]:
    """The learning rate of every optimiser step that ``run()`` takes."""
    rates = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"])
    )
    try:
        run()
    finally:
        hook.remove()
    return rates


@pytest.mark.parametrize("saved_schedule", [True, False], ids=["schedule-saved", "older-last"])
def test_a_resumed_run_follows_the_unbroken_schedule(saved_schedule, tmp_path, recwarn):
    """Stopped after epoch 1 of 3 and resumed, a cosine run takes every step at the rate of the
    same run without a break, and torch never warns of a schedule stepped before the optimiser
    (the schedule is rebuilt at its saved position, not stepped forward). A ``last/`` written
    before the schedule was saved (no scheduler.json) resumes at its history's epochs."""
    cases = [_case("a"), _case("b", 1)]
    cosine = dict(epochs=3, steps_per_epoch=2, batch_size=2, lr=1e-3, schedule="cosine")
    config = tiny_unet_config(tmp_path / "whole", **cosine)
    unbroken = _rates_per_step(lambda: finetune(cases, config))
    assert len(unbroken) == 6 and len(set(unbroken)) == 6  # a new rate at every step

    stop = threading.Event()

    def stop_after_one(event) -> None:
        if isinstance(event, EpochDone) and event.epoch == 1:
            stop.set()

    broken = dataclasses.replace(config, output_dir=str(tmp_path / "broken"))
    first = _rates_per_step(lambda: finetune(cases, broken, progress=stop_after_one, stop=stop))
    assert len(first) == 2
    if not saved_schedule:
        (tmp_path / "broken" / "last" / "scheduler.json").unlink()
    resumed = _rates_per_step(lambda: finetune(cases, dataclasses.replace(broken, resume=True)))
    assert first + resumed == pytest.approx(unbroken, rel=1e-12)
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_a_replacing_run_stopped_at_once_leaves_no_old_checkpoint(tmp_path):
    """--overwrite: the new run clears the old one's files before writing its own, so a stop
    before its first epoch ends cannot leave the old weights beside the new settings."""
    cases = [_case("a"), _case("b", 1)]
    config = _config(tmp_path, epochs=1, steps_per_epoch=1, batch_size=2)
    finetune(cases, config)
    assert (tmp_path / "run" / "best").is_dir() and (tmp_path / "run" / "last").is_dir()
    replacing = dataclasses.replace(config, lr=5e-4)
    with pytest.raises(InputError):  # a bad input is refused before anything is cleared
        finetune(cases, dataclasses.replace(replacing, model="no-such-model"))
    assert (tmp_path / "run" / "best").is_dir()
    with pytest.raises(CancelledError, match="no checkpoint was written"):
        finetune(cases, replacing, stop=lambda: True)  # stopped before its first step
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert left == ["config.json", "split.json"]
    assert json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["lr"] == 5e-4


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from napari_la_dinov2.volume_files import VolumeMeta
from napari_la_dinov2.training import Case, TrainConfig, finetune
cases = []
for i in range(2):
    image, mask = synthetic_case((40, 36, 6), seed=i)
    cases.append(Case(f"c{{i}}", image, mask, VolumeMeta.from_spacing(image.shape)))
config = TrainConfig(model="unet", model_kwargs=TINY_UNET_KWARGS,
                     preprocessing=TINY_UNET_PREPROCESSING, epochs=10000, steps_per_epoch=1,
                     batch_size=2, lr=1e-3, device="cpu", output_dir={out!r}, patience=10000)
finetune(cases, config)
"""


def test_killed_training_leaves_a_loadable_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    script = _KILL_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # let it write a few epochs, then kill mid-write
            history = out / "history.csv"
            if history.is_file() and len(history.read_text(encoding="utf-8").splitlines()) >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the training subprocess wrote no history")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    best = load_model(out / "best")  # complete: atomic folder swap
    assert best.provenance["epoch"] >= 1
    load_model(out / "last")


def test_bad_cases_name_the_case():
    image, mask = synthetic_case((20, 20, 4))
    with pytest.raises(InputError, match="case wrong: the mask has shape"):
        Case("wrong", image, mask[:, :, :3], VolumeMeta.from_spacing(image.shape))
    labels = mask.astype(np.int16)
    labels[0, 0, 0] = 2
    with pytest.raises(InputError, match="case multi: the mask is not binary"):
        cases_from_arrays([("multi", image, labels, None)])
    with pytest.raises(InputError, match="case empty: the mask has no labelled voxel"):
        cases_from_arrays([("empty", image, np.zeros_like(mask), None)])


def test_bad_case_files_name_the_case(tmp_path):
    import nibabel as nib

    image, mask = synthetic_case((20, 20, 4))
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "images" / "p7.nii.gz")
    nib.save(nib.Nifti1Image(mask[:, :10], np.eye(4)), tmp_path / "labels" / "p7.nii.gz")
    with pytest.raises(InputError, match="p7"):
        load_case_folder(tmp_path)


def test_the_seed_fixes_the_whole_run_including_the_initial_weights(tmp_path):
    cases = [_case("a", 0), _case("b", 1)]

    def weights(seed, name, global_seed):
        config = _config(tmp_path, name, epochs=1, steps_per_epoch=1, batch_size=2, seed=seed)
        torch.manual_seed(global_seed)  # whatever the caller's RNG state, the config decides
        model = finetune(cases, config, val_cases=cases[:1]).model
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first, again = weights(0, "s0", global_seed=1), weights(0, "s0-again", global_seed=2)
    other = weights(1, "s1", global_seed=1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_split_seed_keeps_the_patients_apart_across_member_seeds(tmp_path):
    # Ensemble members: other seeds (weights, sampling), the same validation patients.
    cases = [_case(name, i % 2) for i, name in enumerate("abcdefghij")]

    def split(seed, split_seed, name):
        config = tiny_unet_config(
            tmp_path / name,
            epochs=1,
            steps_per_epoch=1,
            batch_size=2,
            seed=seed,
            split_seed=split_seed,
            split=(0.6, 0.2, 0.2),
        )
        finetune(cases, config)
        return json.loads((tmp_path / name / "split.json").read_text(encoding="utf-8"))

    member = split(seed=7, split_seed=0, name="member")
    assert member == split(seed=0, split_seed=None, name="seed0")
    assert split(seed=7, split_seed=None, name="seed7") != member


def test_2_5d_unet_trains_and_keeps_its_context(tmp_path):
    config = TrainConfig(
        model="unet",
        model_kwargs=TINY_UNET_KWARGS,  # the network's 3 channels are derived
        preprocessing={**TINY_UNET_PREPROCESSING, "context": 1},
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    result = finetune([_case("a"), _case("b", 1)], config)
    model = load_model(result.best_checkpoint)
    assert model.preprocessing.context == 1 and model.net.rebuild_kwargs()["in_channels"] == 3
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_2_5d_input_for_a_one_channel_network_is_an_input_error(tmp_path):
    one_channel = {**TINY_UNET_KWARGS, "in_channels": 1}
    config = TrainConfig(
        model="unet",
        model_kwargs=one_channel,
        preprocessing={**TINY_UNET_PREPROCESSING, "context": 1},
        epochs=1,
        steps_per_epoch=1,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    with pytest.raises(InputError, match="in_channels=1 does not fit"):
        finetune([_case("a"), _case("b", 1)], config)
    stated = {**TINY_UNET_PREPROCESSING, "context": 1, "channels": 1}
    with pytest.raises(InputError, match="channels 1 does not fit context 1"):
        finetune([_case("a")], dataclasses.replace(config, preprocessing=stated))
    assert not (tmp_path / "run").exists()
