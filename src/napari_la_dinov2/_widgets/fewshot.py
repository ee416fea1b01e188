"""Few-shot widget: learning curves of several models against the number of annotated patients.

Gathers cases (layers or a folder), models, budgets and seeds into a ``FewShotConfig`` and runs
``training.fewshot.run_fewshot`` in a worker. Before the start the dock says how many runs that
makes, and "Estimate time" times a few real training steps of each model
(``training.estimate``); while it runs, each finished run's test Dice joins a live Dice-vs-data
plot and the status line says how long is left; at the end, the table of test Dice per model and
budget (the engine also writes results.csv, summary.md and fewshot.png in the output folder).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
)
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QTableWidget,
    QTableWidgetItem,
)

from ..errors import InputError
from ..training.events import EpochDone, RunDone, RunStarted, StepDone
from ._cases import CasePicker, with_folder_cases
from ._models import KNOWN_MODELS, device_choices, follow_known_models, size_model_list
from ._options import ScrollingDock, status_line
from ._plots import FewShotPlot
from ._worker import Job
from .finetune import default_run_dir

RESULT_FILES = ("results.csv", "summary.md", "fewshot.png")  # what run_fewshot writes


def parse_list(text: str, kind, what: str) -> list:
    """'1, 10, all' -> [1, 10, 'all'] with ``kind`` applied to each item except 'all'."""
    items = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        return [item if item == "all" else kind(item) for item in items]
    except ValueError:
        raise InputError(f"{what} {text!r} must be a comma-separated list of numbers.") from None


def format_duration(seconds: float) -> str:
    from ..training.estimate import format_duration as engine_format

    return engine_format(seconds)


def budget_label(kind: str, budget, n_train: int) -> str:
    """'1 patient', '10 patients', 'all (12)', '25% (3)': the budget with the patients it gave."""
    if kind != "patients":
        return f"{float(budget):.0%} ({n_train})"
    if str(budget) == "all":
        return f"all ({n_train})"
    return f"{budget} patient" + ("" if str(budget) == "1" else "s")


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per model and budget: seeds and test Dice (mean and SD over seeds of each run's mean)."""
    from ..training.fewshot_results import rows_by_seed

    table = []
    for (model, kind, budget, n_train), seeds in rows_by_seed(rows).items():
        means = np.array([np.mean([float(r["dice"]) for r in v]) for v in seeds.values()])
        table.append(
            {
                "model": model,
                "budget": budget_label(kind, budget, n_train),
                "patients": n_train,
                "seeds": len(means),
                "dice_mean": float(means.mean()),
                "dice_sd": float(means.std(ddof=1)) if means.size > 1 else 0.0,
            }
        )
    return table


def _summary_table() -> QTableWidget:
    """The read-only table of one row per model and budget."""
    table = QTableWidget(0, 4)
    # Dice first after the model and budget (which names its patients): the dock is narrow.
    table.setHorizontalHeaderLabels(["Model", "Budget", "Dice", "Seeds"])
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setMinimumHeight(110)
    return table


class FewShotWidget(ScrollingDock, Container):
    """Plugins > LA DINOv2 > Few-shot."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.picker = CasePicker(napari_viewer)
        self.models = Select(label="Models", choices=KNOWN_MODELS.choices)
        self.patients = LineEdit(label="Patients", value="1, 10, all")
        self.fractions = LineEdit(label="Fractions", value="")
        self.fractions.tooltip = "fractions of the training patients, e.g. 0.05, 0.5"
        # Smaller than the paper's 3 seeds x 10 epochs, which take hours on a laptop CPU.
        self.seeds = LineEdit(label="Seeds", value="0")
        self.epochs = SpinBox(label="Epochs per run", value=5, min=1, max=1000)
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.output = FileEdit(
            label="Output folder", mode="d", value=str(default_run_dir("fewshot"))
        )
        self.plan = Label(value="")
        self.estimate_button = PushButton(text="Estimate time")
        self.estimate_button.tooltip = "times a few training steps of each model on this machine"
        self.run_button = PushButton(text="Run few-shot")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.picker,
                self.models,
                self.patients,
                self.fractions,
                self.seeds,
                self.epochs,
                self.batch_size,
                self.device,
                self.output,
                self.plan,
                Container(
                    layout="horizontal",
                    labels=False,
                    widgets=[self.estimate_button, self.run_button, self.cancel_button],
                ),
                self.status,
            ],
            scrollable=True,  # every button stays reachable on a short screen
        )
        for label in (self.plan, self.status):
            status_line(label)
        self.curve = FewShotPlot()
        self.table = _summary_table()
        results = QHBoxLayout()  # side by side: the dock fits a 1000-pixel screen
        results.addWidget(self.curve, stretch=1)
        results.addWidget(self.table, stretch=1)
        self.inner.layout().addLayout(results, stretch=1)
        self.job: Job | None = None
        self.rows: list[dict] = []
        self.summary: list[dict] = []
        self._run_total, self._started = 1, time.perf_counter()
        self.estimated = None  # the last time estimate (training.estimate.Estimate)
        self._connect()

    def _connect(self) -> None:
        self.run_button.changed.connect(self.run)
        self.estimate_button.changed.connect(self.estimate)
        self.cancel_button.changed.connect(lambda *_: self.job and self.job.cancel())
        for widget in (self.models, self.patients, self.fractions, self.seeds, self.epochs):
            widget.changed.connect(self.update_plan)
        follow_known_models(self.models)
        size_model_list(self.models)
        self.update_plan()

    def config(self):
        from ..training import TrainConfig
        from ..training.fewshot import FewShotConfig

        models = list(self.models.value)
        if not models:
            raise InputError("select at least one model.")
        return FewShotConfig(
            models=models,
            patients=parse_list(self.patients.value, int, "patients"),
            fractions=parse_list(self.fractions.value, float, "fractions"),
            seeds=parse_list(self.seeds.value, int, "seeds"),
            output_dir=str(self.output.value),
            train=TrainConfig(
                epochs=self.epochs.value,
                batch_size=self.batch_size.value,
                device=self.device.value,
            ),
        )

    def update_plan(self, _=None) -> None:
        """Say, before anything starts, how many runs the settings make and what that costs."""
        try:
            config = self.config()
            budgets = config.budgets()
        except InputError as error:
            self.plan.value = f"Not ready: {error}"
            return
        models, seeds = len(config.models), len(config.seeds)
        runs = models * len(budgets) * seeds
        self.plan.value = (
            f"Up to {runs} training runs ({models} model(s) x {len(budgets)} budget(s) x "
            f"{seeds} seed(s)) of {config.train.epochs} epochs each, then a test of each. "
            "With many patients this takes hours on a laptop CPU (the paper's 3 seeds x 10 "
            "epochs even more): 'Estimate time' times a few training steps of each model here."
        )

    def _start(self, what: str, job, on_done) -> Job | None:
        self.job = Job(
            job,
            description=what,
            on_event=self._on_event,
            on_done=on_done,
            on_finished=self._finished,
        )
        self.run_button.enabled = self.estimate_button.enabled = False
        self.cancel_button.enabled = True
        self._started = time.perf_counter()
        return self.job

    def estimate(self, _=None) -> Job | None:
        """Time a few training steps of each model on the first case, in a worker, and say how
        long the whole experiment's training would take."""
        try:
            config = self.config()
            config.budgets()
            cases, folder = self.picker.collect()
        except InputError as error:
            show_error(f"Few-shot: {error}")
            return None

        def job(report, stop):
            from ..training.estimate import estimate

            return estimate(config, with_folder_cases(cases, folder), stop=stop)

        def done(found) -> None:
            self.estimated = found
            self.plan.value = f"{found.describe()} (timed on {config.train.device})."

        self.plan.value = "timing a few training steps of each model..."
        return self._start("Few-shot time estimate", job, done)

    def run(self, _=None) -> Job | None:
        try:
            config = self.config()
            config.budgets()  # checks budgets, models and seeds before any work
            cases, folder = self.picker.collect()
        except InputError as error:
            show_error(f"Few-shot: {error}")
            return None

        def job(report, stop):
            from ..training.fewshot import run_fewshot

            return run_fewshot(with_folder_cases(cases, folder), config, progress=report, stop=stop)

        self.curve.clear()
        self._output, self._runs_done = Path(config.output_dir), 0
        self.status.value = f"running into {config.output_dir}..."
        return self._start("Few-shot", job, self._done)

    def _left(self, done_fraction: float) -> str:
        """'; about 12 min left' from the time so far and the share of the runs done."""
        if done_fraction <= 0.01:
            return ""
        elapsed = time.perf_counter() - self._started
        return f"; about {format_duration(elapsed * (1 - done_fraction) / done_fraction)} left"

    def _on_event(self, event) -> None:
        self.curve.add_event(event)  # a dot per finished run; the running run's validation
        if isinstance(event, RunStarted):
            self._run_total = event.total
            self._run_text = (
                f"run {event.index + 1}/{event.total}: {event.model}, "
                f"{event.n_train} patient(s), seed {event.seed}"
            )
            self.status.value = self._run_text + self._left(event.index / event.total)
            self.job.set_progress(event.index, event.total)
        elif isinstance(event, StepDone) and event.run is not None:
            within = (event.epoch - 1 + event.step / event.steps) / event.epochs
            left = self._left((event.run + within) / self._run_total)
            self.status.value = f"{self._run_text}, epoch {event.epoch}/{event.epochs}{left}"
        elif isinstance(event, EpochDone) and event.run is not None:
            self._run_text = self._run_text.split(" (last validation")[0] + (
                f" (last validation Dice {event.val_dice:.3f})"
            )
        elif isinstance(event, RunDone):
            self._runs_done = event.index + 1
            self.job.set_progress(event.index + 1, event.total)

    def _done(self, rows: list[dict]) -> None:
        self.rows = rows
        self.summary = summary_rows(rows)
        self.table.setRowCount(len(self.summary))
        for r, row in enumerate(self.summary):
            values = [
                row["model"],
                row["budget"],
                f"{row['dice_mean']:.3f} ± {row['dice_sd']:.3f}",
                str(row["seeds"]),
            ]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        # Every column in sight (the plot beside it gives way): a cut "Seeds" column was hidden.
        scrollbar = self.table.verticalScrollBar().sizeHint().width()
        width = self.table.horizontalHeader().length() + 2 * self.table.frameWidth() + scrollbar
        self.table.setMinimumWidth(width)
        self.status.value = self._outcome_text()
        self.output.value = str(default_run_dir("fewshot"))

    def _outcome_text(self) -> str:
        """What the run left: cancelled or not, and only the files that exist."""
        took = format_duration(time.perf_counter() - self._started)
        files = [n for n in RESULT_FILES if (self._output / n).is_file()]
        where = f"; {', '.join(files)} in {self._output}" if files else "; no result files written"
        if self.job is not None and self.job.stop():
            return (
                f"cancelled after {self._runs_done} of {self._run_total} runs, in {took}: "
                f"{len(self.summary)} result(s){where}"
            )
        return f"{len(self.summary)} results in {took}{where}"

    def _finished(self) -> None:
        self.run_button.enabled = self.estimate_button.enabled = True
        self.cancel_button.enabled = False
