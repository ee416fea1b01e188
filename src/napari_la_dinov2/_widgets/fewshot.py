"""Few-shot widget: learning curves of several models against the number of annotated patients.

Gathers cases (layers or a folder), models, budgets and seeds into a ``FewShotConfig`` and runs
``training.fewshot.run_fewshot`` in a worker; when done it shows the curve (fewshot.png) and a
table of test Dice per model and budget, read from what the engine wrote in the output folder.
"""

from __future__ import annotations

from collections import defaultdict
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
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QAbstractItemView, QLabel, QTableWidget, QTableWidgetItem

from ..errors import InputError
from ..training.events import EpochDone, RunStarted
from ._cases import CasePicker, with_folder_cases
from ._models import KNOWN_MODELS, device_choices, follow_known_models
from ._worker import Job
from .finetune import default_run_dir


def parse_list(text: str, kind, what: str) -> list:
    """'1, 10, all' -> [1, 10, 'all'] with ``kind`` applied to each item except 'all'."""
    items = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        return [item if item == "all" else kind(item) for item in items]
    except ValueError:
        raise InputError(f"{what} {text!r} must be a comma-separated list of numbers.") from None


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per model and budget: seeds and test Dice (mean and SD over seeds of each run's mean)."""
    per_run: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = (row["model"], row["budget_kind"], row["budget"], row["n_train"])
        per_run[key][row["seed"]].append(float(row["dice"]))
    table = []
    for (model, kind, budget, n_train), seeds in per_run.items():
        means = np.array([np.mean(v) for v in seeds.values()])
        table.append(
            {
                "model": model,
                "budget": f"{budget} patients" if kind == "patients" else f"{budget:.0%}",
                "patients": n_train,
                "seeds": len(means),
                "dice_mean": float(means.mean()),
                "dice_sd": float(means.std(ddof=1)) if means.size > 1 else 0.0,
            }
        )
    return table


class FewShotWidget(Container):
    """Plugins > LA DINOv2 > Few-shot."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.picker = CasePicker(napari_viewer)
        self.models = Select(label="Models", choices=KNOWN_MODELS.choices)
        self.models.native.setMaximumHeight(110)
        self.patients = LineEdit(label="Patients", value="1, 10, all")
        self.fractions = LineEdit(label="Fractions", value="")
        self.fractions.tooltip = "fractions of the training patients, e.g. 0.05, 0.5"
        self.seeds = LineEdit(label="Seeds", value="0, 1, 2")
        self.epochs = SpinBox(label="Epochs per run", value=10, min=1, max=1000)
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.output = FileEdit(
            label="Output folder", mode="d", value=str(default_run_dir("fewshot"))
        )
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
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.curve = QLabel()
        self.curve.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Model", "Budget", "Patients", "Seeds", "Dice"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.native.layout().addWidget(self.curve)
        self.native.layout().addWidget(self.table)
        self.job: Job | None = None
        self.rows: list[dict] = []
        self.summary: list[dict] = []
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(lambda *_: self.job and self.job.cancel())
        follow_known_models(self.models)

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

            return run_fewshot(with_folder_cases(cases, folder), config, progress=report,
                               stop=stop)  # fmt: skip

        self.job = Job(
            job,
            description="Few-shot",
            on_event=self._on_event,
            on_done=self._done,
            on_finished=self._finished,
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"running into {config.output_dir}..."
        self._output = Path(config.output_dir)
        return self.job

    def _on_event(self, event) -> None:
        if isinstance(event, RunStarted):
            self._run_index, self._run_total = event.index, event.total
            self.status.value = (
                f"run {event.index + 1}/{event.total}: {event.model}, "
                f"{event.n_train} patient(s), seed {event.seed}"
            )
            self.job.set_progress(event.index, event.total)
        elif isinstance(event, EpochDone):
            self.status.value = (
                f"run {event.run + 1}/{self._run_total}: epoch {event.epoch}/{event.epochs}, "
                f"validation Dice {event.val_dice:.3f}"
            )

    def _done(self, rows: list[dict]) -> None:
        self.rows = rows
        self.summary = summary_rows(rows)
        self.table.setRowCount(len(self.summary))
        for r, row in enumerate(self.summary):
            values = [
                row["model"],
                row["budget"],
                str(row["patients"]),
                str(row["seeds"]),
                f"{row['dice_mean']:.3f} ± {row['dice_sd']:.3f}",
            ]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        plot = self._output / "fewshot.png"
        if plot.is_file():
            pixmap = QPixmap(str(plot))
            self.curve.setPixmap(
                pixmap.scaledToWidth(380, Qt.TransformationMode.SmoothTransformation)
            )
        self.status.value = f"{len(self.summary)} results; files in {self._output}"
        self.output.value = str(default_run_dir("fewshot"))

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
