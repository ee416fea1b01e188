"""What long training jobs report while they run: one small frozen type per kind of event, so
the command line, the widgets and the benchmarks read fields, not dictionary keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeaturesComputed:
    """A frozen backbone's token maps: ``done`` of ``total`` cases (or mirrored cases) ready."""

    done: int
    total: int


@dataclass(frozen=True)
class StepDone:
    """One optimiser step of a fine-tuning run (``run``: its index in a few-shot plan)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    run: int | None = None


@dataclass(frozen=True)
class EpochDone:
    """An epoch and its validation (``run``: its index in a few-shot plan)."""

    epoch: int
    epochs: int
    train_loss: float
    val_dice: float
    best_val_dice: float
    seconds: float
    run: int | None = None


@dataclass(frozen=True)
class RunStarted:
    """A few-shot run starts: model, budget (patients or percent), training patients, seed."""

    index: int
    total: int
    model: str
    budget_kind: str
    budget: float
    n_train: int
    seed: int


@dataclass(frozen=True)
class RunDone:
    """A few-shot run was trained and tested: its mean test Dice over the test cases (or an
    earlier identical run's, reused)."""

    index: int
    total: int
    model: str
    budget_kind: str
    budget: float
    n_train: int
    seed: int
    dice: float


TrainingEvent = FeaturesComputed | StepDone | EpochDone | RunStarted | RunDone
