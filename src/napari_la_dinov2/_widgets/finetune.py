"""Fine-tune widget: image + corrected Labels layers (or a case folder) -> a new checkpoint.

Gathers cases and a ``TrainConfig``, runs ``training.finetune`` in a worker, plots its progress
events live, adds the best checkpoint to every widget's model list and re-segments with it on
one click. Cancel sets the engine's stop flag: the best checkpoint so far is kept.

The correction loop: a mask made by Segment keeps the model's own mask in its metadata, passed
as ``Case.prediction`` so the corrected slices weigh more; the cases fine-tuned on before in
this viewer are replayed (a few of them) so that a round does not make the model forget them;
and the "Quick round" preset (``TrainConfig.quick_round``) is one short epoch whose cost is
said before it starts, from the last round's measured step time.
"""

from __future__ import annotations

import json
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

from .._layer_geometry import MODEL_KEY
from ..errors import CancelledError, InputError
from ..models import ALIASES, list_models
from ..training.events import EpochDone, StepDone
from ..training.train_config import QUICK_ROUND
from ._cases import CasePicker, with_folder_cases
from ._models import KNOWN_MODELS, device_choices, follow_known_models
from ._options import collapsible, status_line
from ._plots import TrainingPlot
from ._status import failure_text, for_the_gui, measures_text, progress_text
from ._worker import Job, cancel_jobs_on_close

MAX_REPLAY = 3  # earlier cases of the session replayed in a round (the most recent ones)
MAX_REMEMBERED = 6  # earlier cases the widget keeps


def default_run_dir(kind: str = "finetune") -> Path:
    """A new folder under ~/la-dinov2-runs, named by the time: never the current directory."""
    return Path.home() / "la-dinov2-runs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def registry_name(source: str) -> str | None:
    """The registry name of a model source (a name, or a checkpoint folder's config.json)."""
    if source in list_models():
        return source
    if source in ALIASES:
        return "unet_ensemble"
    try:
        return json.loads((Path(source) / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def is_trained(source: str) -> bool:
    """Shipped models and checkpoints are trained; registry names have untrained heads."""
    return source not in list_models()


class FinetuneWidget(Container):
    """Plugins > LA DINOv2 > Fine-tune."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.picker = CasePicker(napari_viewer)
        self.model = ComboBox(label="Start from", choices=KNOWN_MODELS.choices)
        steps = QUICK_ROUND["steps_per_epoch"]
        self.quick = CheckBox(text=f"Quick round (1 epoch of {steps} steps)", value=True)
        self.quick.tooltip = (
            f"TrainConfig.quick_round: {steps} steps of {QUICK_ROUND['batch_size']} slices at "
            f"lr {QUICK_ROUND['lr']:g}, BatchNorm statistics kept"
        )
        options = self._folded_options()
        self.output = FileEdit(label="Output folder", mode="d", value=str(default_run_dir()))
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel (keep best)", enabled=False)
        self.resegment = PushButton(text="Segment with it", enabled=False)
        self.resegment.tooltip = "segment the image again with the new checkpoint"
        self.status = Label(value="")
        buttons = Container(
            widgets=[self.run_button, self.cancel_button, self.resegment],
            layout="horizontal",
            labels=False,
        )
        buttons.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[
                self.picker,
                self.model,
                self.quick,
                self.output,
                buttons,
                self.status,
            ]
        )
        self.more = collapsible(self, options, "Epochs, batch, learning rate, device", at=3)
        self._folded = options
        status_line(self.status)
        self.plot = TrainingPlot()
        self.native.layout().addWidget(self.plot)
        self.job: Job | None = None
        self.result = None
        self.checkpoint: str | None = None
        self.session_cases: list = []  # cases fine-tuned on before in this viewer: replayed
        self.seconds_per_step: float | None = None  # measured in the last round
        self._step_times: list[float] = []
        self._connect()
        cancel_jobs_on_close(napari_viewer)
        self._model_changed()

    def _folded_options(self) -> Container:
        """The options of a full round (epochs, batch, learning rate, backbone, device), folded
        under one heading."""
        self.epochs = SpinBox(label="Epochs", value=5, min=1, max=1000)
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.lr = LineEdit(label="Learning rate", value="")
        self.lr.tooltip = "blank: the paper's rate for the model family (DINOv2 1e-3, CNNs 1e-4)"
        self.freeze = CheckBox(text="Freeze the DINOv2 backbone", value=True)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        return Container(widgets=[self.epochs, self.batch_size, self.lr, self.freeze, self.device])

    def _connect(self) -> None:
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.resegment.changed.connect(self.segment_with_result)
        self.model.changed.connect(self._model_changed)
        self.quick.changed.connect(self._quick_changed)
        self.picker.mask.changed.connect(self._mask_changed)
        follow_known_models(self.model)

    def reset_choices(self, *_) -> None:
        super().reset_choices()
        if getattr(self, "_folded", None) is not None:
            self._folded.reset_choices()

    def _model_changed(self, _=None) -> None:
        """The freeze box only for DINOv2; the quick round by default for trained models."""
        source = str(self.model.value)
        self.freeze.visible = str(registry_name(source) or "").startswith("dinov2")
        self.quick.value = is_trained(source)
        self._quick_changed()

    def _mask_changed(self, layer=None) -> None:
        """A mask made by Segment: start from the model that made it (its own mask is what
        the corrections are measured against)."""
        source = (getattr(layer, "metadata", None) or {}).get(MODEL_KEY)
        if source is not None and source in dict(KNOWN_MODELS.choices()).values():
            self.model.value = source

    def _quick_changed(self, _=None) -> None:
        for widget in (self.epochs, self.batch_size, self.lr):
            widget.enabled = not self.quick.value

    def config(self):
        """The TrainConfig the form describes."""
        from ..training import TrainConfig

        # A trained model keeps its BatchNorm statistics: a few corrected cases would otherwise
        # replace them (see TrainConfig.freeze_norm_stats); a new head must learn them.
        common = dict(
            model=self.model.value,
            output_dir=str(self.output.value),
            freeze_backbone=self.freeze.value,
            device=self.device.value,
            freeze_norm_stats=is_trained(self.model.value),
        )
        if self.quick.value:
            return TrainConfig.quick_round(**common)
        lr_text = self.lr.value.strip()
        try:
            lr = float(lr_text) if lr_text else None
        except ValueError:
            raise InputError(f"learning rate {lr_text!r} is not a number (e.g. 1e-4).") from None
        return TrainConfig(
            epochs=self.epochs.value, batch_size=self.batch_size.value, lr=lr, **common
        )

    def cost_text(self, config) -> str:
        """What the round will cost, as honestly as is known before it starts."""
        steps = config.steps_per_epoch
        if steps is None:
            return f"{config.epochs} epochs; the time per step shows once the first steps ran"
        total = steps * config.epochs
        if self.seconds_per_step is None:
            return f"{total} steps; the time left shows once the first steps ran"
        return f"{total} steps, about {total * self.seconds_per_step:.0f} s (from the last round)"

    def _prepare(self):
        """``(config, cases, folder, replay)`` for a run, or InputError before any work."""
        from ..training.state import check_run_dir

        config = self.config()
        cases, folder = self.picker.collect(predictions=True)
        check_run_dir(config.output_dir, resume=False, overwrite=False)
        names = {case.name for case in cases}
        replay = [c for c in self.session_cases if c.name not in names][-MAX_REPLAY:]
        return config, cases, folder, replay

    def run(self, _=None) -> Job | None:
        try:
            pairs = self.picker.chosen_pairs()
            config, cases, folder, replay = self._prepare()
        except InputError as error:
            self.status.value = f"not started: {for_the_gui(str(error))}"
            show_error(f"Fine-tune: {for_the_gui(str(error))}")
            return None

        def job(report, stop):
            from ..training import finetune

            return finetune(
                with_folder_cases(cases, folder),
                config,
                replay=replay or None,
                progress=report,
                stop=stop,
            )

        self.plot.clear(epochs=config.epochs or 1)
        self._image_for_resegment = pairs[0][0] if pairs else self.picker.image.value
        self._cases, self._single = cases, len(cases) == 1 and folder is None
        self._step_times, self._stop_asked = [], False
        self.job = Job(
            job,
            description="Fine-tuning",
            on_event=self._on_event,
            on_done=self._done,
            on_finished=self._finished,
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        corrected = sum(case.prediction is not None for case in cases)
        extra = f", {len(replay)} earlier case(s) replayed" if replay else ""
        extra += f", {corrected} with its corrections weighted" if corrected else ""
        self.status.value = f"starting: {self.cost_text(config)}{extra}"
        return self.job

    def _time_left(self, done: int, total: int) -> str:
        """', about N s left' from the steps timed so far (the first step is not timed: it
        includes setting up)."""
        self._step_times.append(time.perf_counter())
        if len(self._step_times) < 3:
            return ""
        times = self._step_times[1:]
        self.seconds_per_step = (times[-1] - times[0]) / (len(times) - 1)
        return f", about {self.seconds_per_step * (total - done):.0f} s left"

    def _on_event(self, event) -> None:
        self.plot.add_event(event)
        if self._stop_asked:
            return
        if isinstance(event, StepDone):
            # The napari progress bar counts steps over the whole run.
            done, total = (event.epoch - 1) * event.steps + event.step, event.epochs * event.steps
            self.job.set_progress(done, total)
            left = self._time_left(done, total)
            if event.step == event.steps:  # the epoch's validation runs now, uncounted above
                left = f"; validating on {'the case' if self._single else 'the validation cases'}"
            self.status.value = (
                f"epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}, "
                f"loss {event.loss:.3f}{left}"
            )
        elif isinstance(event, EpochDone):
            self.status.value = (
                f"epoch {event.epoch}/{event.epochs}: {self._dice_name()} {event.val_dice:.3f} "
                f"(best {event.best_val_dice:.3f})"
            )

    def _dice_name(self) -> str:
        return "Dice on the training case" if self._single else "validation Dice"

    def _done(self, result) -> None:
        self.result = result
        self.checkpoint = str(result.best_checkpoint)
        label = KNOWN_MODELS.add(self.checkpoint)
        self.model.value = self.checkpoint
        self.resegment.enabled = self._image_for_resegment is not None
        remembered = [c for c in self.session_cases if c.name not in {x.name for x in self._cases}]
        self.session_cases = (remembered + list(self._cases))[-MAX_REMEMBERED:]
        kept = (
            f"stopped at epoch {len(result.history)}; kept the best checkpoint"
            if result.stopped
            else "done"
        )
        note = " (measured on the training case itself: the fit to your corrections)"
        self.status.value = (
            f"{kept}: best {self._dice_name()} {result.best_val_dice:.3f}"
            f"{note if self._single else ''}. New checkpoint '{label}' is now selected in "
            f"'Start from' and every model list."
        )
        self.output.value = str(default_run_dir())  # the next run never overwrites this one

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        error = None if self.job is None else self.job.error
        if isinstance(error, CancelledError):
            self.status.value = (
                f"cancelled: {error}. The starting model is unchanged."
                if "no checkpoint" in str(error)
                else f"cancelled: {error}."
            )
        elif error is not None:  # the whole sentence (wrapped); a bug's traceback is notified
            self.status.value = failure_text(error)

    def cancel(self, _=None) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._stop_asked = True
            self.status.value = "stopping after this step; the best checkpoint so far is kept..."

    def segment_with_result(self, _=None) -> Job | None:
        """Re-segment the fine-tuned image with the new checkpoint (a new Labels layer), with
        Segment's progress, measures and (for a model of several branches) doubt."""
        from ..segmentation import InferenceSettings
        from .segment import start_segmentation

        image = self._image_for_resegment
        if self.checkpoint is None or image is None or image not in self.viewer.layers:
            show_error("Fine-tune: no finished run, or its image layer was closed.")
            return None
        label = KNOWN_MODELS.label_of(self.checkpoint)

        def progress(event) -> None:
            self.status.value = progress_text(label, event) or self.status.value

        def done(layer, result) -> None:
            doubtful = list(result.doubtful)
            where = f"; most doubtful slices (file order): {doubtful[:5]}" if doubtful else ""
            self.status.value = f"'{layer.name}': {measures_text(result.measures)}{where}"

        self.status.value = f"segmenting with {label}: loading the model..."
        settings = InferenceSettings(model=self.checkpoint, device=self.device.value, doubt=None)
        return start_segmentation(self.viewer, image, settings, on_event=progress, on_done=done)
