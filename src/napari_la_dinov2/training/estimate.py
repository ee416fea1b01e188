"""How long a few-shot experiment takes, said before it starts: its distinct training runs, and
a few real optimiser steps of each model, timed on the chosen device.

The estimate: runs x epochs x (steps x seconds per step + validation), plus each run's test,
the steps of a run being its training patients times the steps one patient's slices make, and
validating or testing a case costing one timed segmentation of the first case. The timed steps
go through :func:`~.finetune.finetune` itself (the same batches, feature cache and device), into
a temporary folder that is removed afterwards. Loading models and cases is not counted.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass

from ..errors import CancelledError, InputError, is_cancelled
from .cases import Case
from .events import StepDone
from .fewshot import FewShotConfig, budget_size, fixed_split, model_label
from .train_config import TrainConfig

TIMED_STEPS = 4  # the first is a warm-up; the time is the mean of the others


def planned_runs(config: FewShotConfig, names: list[str]) -> list[tuple[str, int, int]]:
    """The distinct training runs ``run_fewshot`` makes of these cases: ``(model, training
    patients, seed)`` (two budgets of the same size share a run)."""
    pool = len(fixed_split(list(names), config)["train"])
    runs: list[tuple[str, int, int]] = []
    for model in config.models:
        for kind, value in config.budgets():
            for seed in config.seeds:
                run = (model, budget_size(kind, value, pool), seed)
                if run not in runs:
                    runs.append(run)
    return runs


@dataclass(frozen=True)
class StepTime:
    """What the timed steps of one model on one patient measured."""

    seconds: float  # one optimiser step
    steps_per_patient: int  # the steps of an epoch on one patient's slices
    predict_seconds: float = 0.0  # segmenting the case once (a validation or test case)


def time_steps(model: str, case: Case, train: TrainConfig, stop=None) -> StepTime:
    """Run a few real training steps of ``model`` on ``case`` and time them."""
    times: list[float] = []

    def progress(event):
        if isinstance(event, StepDone):
            times.append(time.perf_counter())
            steps.append(event.steps)

    steps: list[int] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="la-dinov2-timing-") as folder:
        config = dataclasses.replace(
            train, model=model, output_dir=folder, epochs=1, resume=False, steps_per_epoch=None
        )
        enough = lambda: len(times) >= TIMED_STEPS or is_cancelled(stop)  # noqa: E731
        try:
            from .finetune import finetune

            finetune([case], config, val_cases=[case], progress=progress, stop=enough)
        except CancelledError:
            pass  # stopped on purpose after the timed steps
    if is_cancelled(stop):
        raise CancelledError("the time estimate was cancelled")
    if not times:
        raise InputError(f"the model {model_label(model)} made no training step to time.")
    if len(times) > 1:
        seconds = (times[-1] - times[0]) / (len(times) - 1)
    else:  # one step per epoch: its time includes the setup, an overestimate
        seconds = times[0] - started
    from ..inference import Predictor
    from ..models import load_model

    predictor = Predictor(load_model(model), device=train.device, batch_size=train.batch_size)
    started = time.perf_counter()
    predictor.predict(case.image, case.meta, cancel=stop)
    return StepTime(seconds, steps[0], time.perf_counter() - started)


@dataclass(frozen=True)
class Estimate:
    runs: int
    epochs: int
    steps: int  # optimiser steps over all runs
    seconds: float  # their time

    def describe(self) -> str:
        return (
            f"{self.runs} runs x {self.epochs} epochs = {self.steps:,} training steps: "
            f"about {format_duration(self.seconds)} with validation and testing"
        )


def estimate(
    config: FewShotConfig, cases: list[Case], stop=None, step_times: dict | None = None
) -> Estimate:
    """Estimate the training time of ``run_fewshot(cases, config)``: every model's steps are
    timed on the first case (or taken from ``step_times``, model -> StepTime)."""
    if not cases:
        raise InputError("give the cases first.")
    names = [case.name for case in cases]
    runs = planned_runs(config, names)
    split = fixed_split(names, config)
    n_val, n_test = len(split["val"]) or 1, len(split["test"])  # no validation set: training
    timed = dict(step_times or {})
    for model in config.models:
        if model not in timed:
            timed[model] = time_steps(model, cases[0], config.train, stop)
    steps = seconds = 0.0
    for model, n_train, _ in runs:
        per_epoch = config.train.steps_per_epoch or n_train * timed[model].steps_per_patient
        run_steps = config.train.epochs * max(1, per_epoch)
        steps += run_steps
        seconds += run_steps * timed[model].seconds
        seconds += (config.train.epochs * n_val + n_test) * timed[model].predict_seconds
    return Estimate(runs=len(runs), epochs=config.train.epochs, steps=int(steps), seconds=seconds)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 20 min'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
