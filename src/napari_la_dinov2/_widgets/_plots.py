"""Small matplotlib canvases for dock widgets (Figure + Qt canvas; pyplot is never used, so the
engine's Agg plots in worker threads and these never touch a global backend)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class TrainingPlot(FigureCanvasQTAgg):
    """Live training loss (per step) and validation Dice (per epoch)."""

    def __init__(self):
        figure = Figure(figsize=(4.0, 2.6), dpi=90, layout="constrained")
        super().__init__(figure)
        self.loss_axes = figure.add_subplot(1, 1, 1)
        self.dice_axes = self.loss_axes.twinx()
        self.setMinimumHeight(220)
        self.clear()

    def clear(self) -> None:
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.epochs: list[float] = []
        self.dices: list[float] = []
        for axes in (self.loss_axes, self.dice_axes):
            axes.clear()
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("training loss", color="C0")
        self.dice_axes.set_ylabel("validation Dice", color="C2")
        self.dice_axes.set_ylim(0, 1)
        (self.loss_line,) = self.loss_axes.plot([], [], color="C0", lw=1)
        (self.dice_line,) = self.dice_axes.plot([], [], color="C2", marker="o", ms=4)
        self.draw_idle()

    def add_event(self, event: dict) -> None:
        """A progress event of ``training.finetune``: 'step' adds a loss, 'epoch' a Dice."""
        if event.get("kind") == "step":
            self.steps.append(event["epoch"] - 1 + event["step"] / event["steps"])
            self.losses.append(event["loss"])
            self.loss_line.set_data(self.steps, self.losses)
        elif event.get("kind") == "epoch":
            self.epochs.append(event["epoch"])
            self.dices.append(event["val_dice"])
            self.dice_line.set_data(self.epochs, self.dices)
        else:
            return
        self.loss_axes.set_xlim(0, max(1, event["epochs"]))
        if self.losses:
            top = max(self.losses)
            self.loss_axes.set_ylim(0, top * 1.1 if top > 0 else 1)
        self.draw_idle()
