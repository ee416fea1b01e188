"""A stop raised inside a training step (a closed viewer) ends the step there."""

from __future__ import annotations

import threading

import torch

from napari_la_dinov2.models import load_model
from napari_la_dinov2.training import finetune
from napari_la_dinov2.training.events import EpochDone, StepDone
from tests.test_training import _case, _config, _rates_per_step


def test_a_stop_inside_a_step_ends_it_before_the_optimiser_steps(tmp_path):
    """The flag raised in the middle of a training forward pass ends the step there (a closed
    viewer waits for one layer, not for a step of three UNets): epoch 2 takes no optimiser step
    and reports no step, and the checkpoint of epoch 1 stays the best."""
    stop, epochs_done, seen = threading.Event(), [], []

    def raise_mid_forward(module, args, output):
        if epochs_done and module.training:  # epoch 2's first step, not a validation
            stop.set()

    def progress(event):
        seen.append(event)
        if isinstance(event, EpochDone):
            epochs_done.append(event.epoch)

    config = _config(tmp_path, epochs=20, steps_per_epoch=3, batch_size=4)
    with torch.nn.modules.module.register_module_forward_hook(raise_mid_forward):
        rates = _rates_per_step(
            lambda: seen.append(
                finetune([_case("a"), _case("b", 1)], config, progress=progress, stop=stop)
            )
        )
    result = seen[-1]
    assert stop.is_set() and result.stopped and len(result.history) == 1
    assert len(rates) == 3  # epoch 1's steps only
    assert not [e for e in seen[:-1] if isinstance(e, StepDone) and e.epoch == 2]
    assert load_model(result.best_checkpoint).provenance["epoch"] == 1
