"""Small matplotlib canvases for dock widgets (Figure + Qt canvas; pyplot is never used, so the
engine's Agg plots in worker threads and these never touch a global backend)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

from ..training.events import EpochDone, RunDone, RunStarted, StepDone

# A redraw costs 0.1-0.4 s of GUI-thread time on a busy laptop CPU: coalesce the step events
# into at most one redraw per interval so the viewer stays responsive during training.
REDRAW_INTERVAL_MS = 500
DICE_LIMITS = (-0.05, 1.05)  # as the engine's fewshot.png: a Dice of 0 is not on the axis


class TrainingPlot(FigureCanvasQTAgg):
    """Live training loss (per step) and validation Dice (per epoch)."""

    def __init__(self):
        figure = Figure(figsize=(4.0, 2.6), dpi=80)
        figure.subplots_adjust(left=0.15, right=0.85, bottom=0.24, top=0.95)
        super().__init__(figure)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_INTERVAL_MS)
        self._redraw.timeout.connect(self.draw_idle)
        self.loss_axes = figure.add_subplot(1, 1, 1)
        self.dice_axes = self.loss_axes.twinx()
        self.setMinimumHeight(150)
        self.clear()

    def clear(self, epochs: int = 1) -> None:
        """Empty axes of a run of ``epochs`` (loss 0-1 until the first steps), with a note."""
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.epochs: list[float] = []
        self.dices: list[float] = []
        for axes in (self.loss_axes, self.dice_axes):
            axes.clear()
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("training loss", color="C0")
        self.dice_axes.set_ylabel("validation Dice", color="C2")
        self.dice_axes.yaxis.set_label_position("right")  # clear() moves a twin's axis left
        self.dice_axes.yaxis.tick_right()
        self.dice_axes.set_ylim(0, 1.05)  # a Dice of 1 stays off the top frame
        self.loss_axes.set_xlim(0, max(1, epochs) * 1.04)  # the last Dice off the frame
        self.loss_axes.set_ylim(0, 1)
        self.waiting = self.loss_axes.text(
            0.5,
            0.5,
            "waiting for the first steps",
            transform=self.loss_axes.transAxes,
            ha="center",
            va="center",
            color="0.5",
        )
        (self.loss_line,) = self.loss_axes.plot([], [], color="C0", lw=1)
        (self.dice_line,) = self.dice_axes.plot([], [], color="C2", marker="o", ms=4)
        self._schedule_draw()

    def _schedule_draw(self) -> None:
        if not self._redraw.isActive():
            self._redraw.start()

    def add_event(self, event) -> None:
        """A progress event of ``training.finetune``: a step adds a loss, an epoch a Dice."""
        if isinstance(event, StepDone):
            self.steps.append(event.epoch - 1 + event.step / event.steps)
            self.losses.append(event.loss)
            self.loss_line.set_data(self.steps, self.losses)
        elif isinstance(event, EpochDone):
            self.epochs.append(event.epoch)
            self.dices.append(event.val_dice)
            self.dice_line.set_data(self.epochs, self.dices)
        else:
            return
        self.waiting.set_visible(False)
        self.loss_axes.set_xlim(0, max(1, event.epochs) * 1.04)
        if self.losses:
            top = max(self.losses)
            self.loss_axes.set_ylim(0, top * 1.1 if top > 0 else 1)
        self._schedule_draw()


class FewShotPlot(FigureCanvasQTAgg):
    """Test Dice against training patients, live: a dot per finished run (``RunDone``), a line
    through each model's mean over seeds; while a run trains, its latest validation Dice as a
    hollow dot at its number of patients (a run can take minutes before its test dot)."""

    def __init__(self):
        figure = Figure(figsize=(3.6, 2.2), dpi=80)
        figure.subplots_adjust(left=0.17, right=0.97, bottom=0.22, top=0.95)
        super().__init__(figure)
        self.axes = figure.add_subplot(1, 1, 1)
        self.setMinimumHeight(170)
        self.clear()

    def clear(self) -> None:
        self.points: dict[str, dict[int, list[float]]] = {}  # model -> patients -> Dice
        self.running: RunStarted | None = None
        self.running_dice: float | None = None  # the running run's last validation Dice
        self._draw_points()

    def add_event(self, event) -> None:
        if isinstance(event, RunStarted):
            self.running, self.running_dice = event, None
        elif isinstance(event, EpochDone) and event.run is not None and self.running:
            self.running_dice = event.val_dice
        elif isinstance(event, RunDone):
            self.points.setdefault(event.model, {}).setdefault(event.n_train, []).append(event.dice)
            self.running, self.running_dice = None, None
        else:
            return
        self._draw_points()

    def _budgets(self) -> list[int]:
        found = {n for runs in self.points.values() for n in runs}
        return sorted(found | ({self.running.n_train} if self.running else set()))

    def _draw_running(self, axes) -> None:
        run = self.running
        if self.running_dice is not None:
            axes.plot(
                [run.n_train],
                [self.running_dice],
                "o",
                mfc="none",
                color="0.4",
                ms=6,
                label="validation (training)",
            )
        elif not self.points:
            note = (
                f"run {run.index + 1}/{run.total} training: its validation Dice shows after\n"
                "its first epoch, its test Dice when it ends"
            )
            axes.text(
                0.5,
                0.5,
                note,
                transform=axes.transAxes,
                ha="center",
                va="center",
                color="0.4",
                fontsize=8,
            )

    def _draw_points(self) -> None:
        axes = self.axes
        axes.clear()
        budgets = self._budgets()
        for colour, (model, runs) in enumerate(self.points.items()):
            xs = sorted(runs)
            for x in xs:
                axes.plot([x] * len(runs[x]), runs[x], "o", color=f"C{colour}", ms=4, alpha=0.6)
            means = [sum(runs[x]) / len(runs[x]) for x in xs]
            axes.plot(xs, means, "-", color=f"C{colour}", lw=1.5, label=model)
        if self.running is not None:
            self._draw_running(axes)
        axes.set_xscale("log")
        if budgets:
            axes.set_xticks(budgets, [str(b) for b in budgets])
            # A single budget gets room either side; a dot never sits on an axis line.
            axes.set_xlim(budgets[0] / 1.5, budgets[-1] * 1.5)
        else:
            axes.set_xlim(0.7, 15)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8, loc="lower right")
        axes.minorticks_off()
        axes.set_ylim(*DICE_LIMITS)
        axes.set_xlabel("training patients")
        axes.set_ylabel("test Dice")
        axes.grid(alpha=0.3)
        self.draw_idle()
