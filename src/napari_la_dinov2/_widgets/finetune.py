"""Fine-tune widget: image + corrected Labels layers (or a case folder) -> a new checkpoint.

Gathers cases and a ``TrainConfig``, runs ``training.finetune`` in a worker, plots its progress
events live, adds the best checkpoint to every widget's model list and re-segments with it on
one click. Cancel sets the engine's stop flag: the best checkpoint so far is kept.
"""

from __future__ import annotations

import time
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error

from ..errors import InputError
from ..training.events import EpochDone, StepDone
from ._cases import CasePicker, with_folder_cases
from ._models import KNOWN_MODELS, device_choices, follow_known_models
from ._plots import TrainingPlot
from ._worker import Job


def default_run_dir(kind: str = "finetune") -> Path:
    """A new folder under ~/la-dinov2-runs, named by the time: never the current directory."""
    return Path.home() / "la-dinov2-runs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


class FinetuneWidget(Container):
    """Plugins > LA DINOv2 > Fine-tune."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.picker = CasePicker(napari_viewer)
        self.model = ComboBox(label="Start from", choices=KNOWN_MODELS.choices)
        self.epochs = SpinBox(label="Epochs", value=5, min=1, max=1000)
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.lr = LineEdit(label="Learning rate", value="")
        self.lr.tooltip = "blank: the paper's rate for the model family (DINOv2 1e-3, CNNs 1e-4)"
        self.freeze = CheckBox(text="Freeze the DINOv2 backbone", value=True)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.output = FileEdit(label="Output folder", mode="d", value=str(default_run_dir()))
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel (keep best)", enabled=False)
        self.resegment = PushButton(text="Segment the image with the new model", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.picker,
                self.model,
                self.epochs,
                self.batch_size,
                self.lr,
                self.freeze,
                self.device,
                self.output,
                self.run_button,
                self.cancel_button,
                self.resegment,
                self.status,
            ]
        )
        self.plot = TrainingPlot()
        self.native.layout().addWidget(self.plot)
        self.job: Job | None = None
        self.result = None
        self.checkpoint: str | None = None
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.resegment.changed.connect(self.segment_with_result)
        follow_known_models(self.model)

    def config(self):
        """The TrainConfig the form describes."""
        from ..training import TrainConfig

        lr_text = self.lr.value.strip()
        try:
            lr = float(lr_text) if lr_text else None
        except ValueError:
            raise InputError(f"learning rate {lr_text!r} is not a number (e.g. 1e-4).") from None
        return TrainConfig(
            model=self.model.value,
            output_dir=str(self.output.value),
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            lr=lr,
            freeze_backbone=self.freeze.value,
            device=self.device.value,
        )

    def run(self, _=None) -> Job | None:
        try:
            config = self.config()
            pairs = self.picker.chosen_pairs()
            cases, folder = self.picker.collect()
        except InputError as error:
            show_error(f"Fine-tune: {error}")
            return None

        def job(report, stop):
            from ..training import finetune

            return finetune(with_folder_cases(cases, folder), config, progress=report, stop=stop)

        self.plot.clear()
        self._image_for_resegment = pairs[0][0] if pairs else self.picker.image.value
        self.job = Job(
            job,
            description="Fine-tuning",
            on_event=self._on_event,
            on_done=self._done,
            on_finished=self._finished,
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"training into {config.output_dir}..."
        return self.job

    def _on_event(self, event) -> None:
        self.plot.add_event(event)
        if isinstance(event, StepDone):
            self.status.value = (
                f"epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}, "
                f"loss {event.loss:.3f}"
            )
            # The napari progress bar counts steps over the whole run.
            done = (event.epoch - 1) * event.steps + event.step
            self.job.set_progress(done, event.epochs * event.steps)
        elif isinstance(event, EpochDone):
            self.status.value = (
                f"epoch {event.epoch}/{event.epochs}: validation Dice {event.val_dice:.3f} "
                f"(best {event.best_val_dice:.3f})"
            )

    def _done(self, result) -> None:
        self.result = result
        self.checkpoint = str(result.best_checkpoint)
        label = KNOWN_MODELS.add(self.checkpoint)
        self.model.value = self.checkpoint
        self.resegment.enabled = self._image_for_resegment is not None
        stopped = " (stopped early)" if result.stopped else ""
        self.status.value = (
            f"best validation Dice {result.best_val_dice:.3f}{stopped}; "
            f"checkpoint '{label}' in {result.best_checkpoint}"
        )
        self.output.value = str(default_run_dir())  # the next run never overwrites this one

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def cancel(self, _=None) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "stopping after this step; the best checkpoint is kept..."

    def segment_with_result(self, _=None) -> Job | None:
        """Re-segment the fine-tuned image with the new checkpoint (a new Labels layer)."""
        from .segment import start_segmentation

        image = self._image_for_resegment
        if self.checkpoint is None or image is None or image not in self.viewer.layers:
            show_error("Fine-tune: no finished run, or its image layer was closed.")
            return None
        return start_segmentation(self.viewer, image, self.checkpoint, device=self.device.value)
