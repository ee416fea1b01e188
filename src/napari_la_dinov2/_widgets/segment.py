"""Segment widget: image layer + model -> a Labels layer on the image's grid.

The widget only gathers choices into the engine's
:class:`~napari_la_dinov2.segmentation.InferenceSettings` and a region (a rectangle or a
centre point); ``start_segmentation`` runs
:meth:`~napari_la_dinov2.segmentation.SegmentationEngine.segment` in a worker, exactly as
``la-dinov2 segment`` does, and the result is added as a Labels layer with the image's scale,
translate, affine and metadata (so the writer saves it on the image's grid); the measures go to
the status line, each plausibility warning to a napari warning, and with "Show doubt" the
doubt to a layer and its slices to the navigator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Points, Shapes
from napari.utils.notifications import show_error, show_warning

from .._layer_geometry import (
    MODEL_KEY,
    PREDICTION_KEY,
    labels_layer_kwargs,
    layer_to_file_index,
    layer_volume,
    on_layer_grid,
    unique_layer_name,
)
from ..errors import CancelledError, InputError
from ..inference import RegionOfInterest
from ..measures import LAMeasures
from ..segmentation import (
    PRECISIONS,
    InferenceSettings,
    SegmentationEngine,
    SegmentationResult,
    warn_notes,
)
from ._colours import add_mask_layer
from ._doubt import DoubtNavigator, add_doubt_layer, mark_stale_on_edit
from ._models import KNOWN_MODELS, device_choices, follow_known_models
from ._options import collapsible, status_line
from ._status import failure_text, for_the_gui, measures_text, progress_text
from ._worker import Job, cancel_jobs_on_close


def roi_from_shapes(shapes: Shapes, image: Image, slice_axis: int) -> RegionOfInterest:
    """The region of interest of a drawn rectangle, in the image's array indices.

    Uses the selected shape, else the last one. Its corners go data -> world -> image data, so
    a rectangle drawn on a scaled, translated or rotated image lands on the right voxels. An
    axis the rectangle does not span (the slice it was drawn on) keeps its full range.
    """
    if len(shapes.data) == 0:
        raise InputError(f"the Shapes layer '{shapes.name}' has no rectangle; draw one first.")
    selected = sorted(shapes.selected_data)
    vertices = np.asarray(shapes.data[selected[-1] if selected else -1], dtype=float)
    corners = []
    for vertex in vertices:
        world = np.asarray(shapes.data_to_world(vertex), dtype=float)
        if world.size < image.ndim:  # a 2D Shapes layer over a 3D image: no extent in depth
            world = np.concatenate([np.full(image.ndim - world.size, np.nan), world])
        corners.append(np.asarray(image.world_to_data(world[-image.ndim :]), dtype=float))
    # The image may be shown in its acquisition plane: the engine's ROI is in file indices.
    corners = layer_to_file_index(image, np.stack(corners))
    shape = np.asarray(layer_volume(image)[0].shape)
    start, stop = np.zeros(3, int), shape.copy()
    for axis in range(3):
        values = corners[:, axis]
        if np.all(np.isfinite(values)) and values.max() - values.min() >= 1.0:
            start[axis] = int(np.floor(values.min()))
            stop[axis] = int(np.ceil(values.max())) + 1
    inplane = [axis for axis in range(3) if axis != slice_axis]
    box = (start[inplane[0]], stop[inplane[0]], start[inplane[1]], stop[inplane[1]])
    return RegionOfInterest(
        box=tuple(int(v) for v in box), slices=(int(start[slice_axis]), int(stop[slice_axis]))
    )


def center_from_points(points: Points, image: Image) -> tuple[int, int, int]:
    """The image's file-order voxel under the last point of ``points`` (a click on the atrium):
    data -> world -> image data -> file index, so any scale, translation or display order holds."""
    if len(points.data) == 0:
        raise InputError(f"the Points layer '{points.name}' has no point; click the atrium first.")
    world = np.asarray(points.data_to_world(points.data[-1]), dtype=float)[-image.ndim :]
    index = layer_to_file_index(image, np.asarray(image.world_to_data(world), dtype=float)[None])
    center = np.round(index[0]).astype(int)
    shape = layer_volume(image)[0].shape
    if np.any(center < 0) or np.any(center >= shape):
        raise InputError(
            f"the last point of '{points.name}' is outside the image '{image.name}'; "
            "click inside the volume."
        )
    return tuple(int(c) for c in center)


FLIP_CHOICES = {"as the model recommends": None, "on": True, "off": False}
# Doubt costs nothing extra for a model of several branches (each branch's opinion is needed
# anyway); a single network needs a second, mirrored pass, so it is off by default there.
DOUBT_CHOICES = {"for models with several branches": None, "on": True, "off": False}


def start_segmentation(
    viewer,
    image_layer: Image,
    settings: InferenceSettings,
    *,
    label: str | None = None,
    roi: RegionOfInterest | None = None,
    center: tuple[int, int, int] | None = None,
    on_event=None,
    on_done=None,
    on_finished=None,
) -> Job:
    """Segment ``image_layer`` with ``settings`` (the engine's, as on the command line) in a
    worker; add the mask as a Labels layer "<image> LA (<model>)" (the model's own mask kept in
    its metadata, PREDICTION_KEY) and show each plausibility warning. ``center`` (file voxel
    indices) segments the model's field of view around it in place of ``roi``. With doubt on,
    the doubt is added as an Image layer. ``on_done(layer, result)`` runs after that."""
    volume, meta = layer_volume(image_layer)
    source = settings.model
    label = label or KNOWN_MODELS.label_of(source)

    def job(report, stop):
        engine = SegmentationEngine(settings)
        warn_notes(engine)  # napari shows a worker's warnings as notifications
        progress = lambda done, total: report({"done": done, "total": total})  # noqa: E731
        result = engine.segment(
            volume, meta, roi=roi, center=center, progress=progress, cancel=stop
        )
        warn_notes(engine, result)
        return result

    def add_layer(result: SegmentationResult):
        doubt = None
        if result.doubt is not None:  # under the mask, so the brush stays on the mask
            name = unique_layer_name(viewer, f"{image_layer.name} doubt ({label})")
            doubt = add_doubt_layer(viewer, image_layer, result.doubt, name)
        # The mask is in the file's voxel order: shown as its image is.
        shown = on_layer_grid(image_layer, result.labels)
        name = unique_layer_name(viewer, f"{image_layer.name} LA ({label})")
        kwargs = labels_layer_kwargs(image_layer, name=name)
        kwargs["metadata"][PREDICTION_KEY] = result.labels.copy()  # the brush edits data only
        kwargs["metadata"][MODEL_KEY] = source
        layer = add_mask_layer(viewer, shown, **kwargs)  # in a colour of its own
        viewer.layers.selection.active = layer
        if doubt is not None:
            mark_stale_on_edit(layer, doubt)
        for warning in result.warnings:
            show_warning(f"'{layer.name}': {warning}")
        if on_done is not None:
            on_done(layer, result)

    return Job(
        job,
        description=f"Segmenting '{image_layer.name}'",
        on_event=on_event,
        on_done=add_layer,
        on_finished=on_finished,
    )


class SegmentWidget(Container):
    """Plugins > LA DINOv2 > Segment."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        # Layer pickers by annotation: napari fills them from the viewer's layer list, and
        # refreshes them (reset_choices) as layers are added, removed, renamed or moved once
        # the widget is docked.
        self.image = create_widget(annotation=Image, label="Image")
        self.model = ComboBox(label="Model", choices=KNOWN_MODELS.choices)
        self.show_doubt = ComboBox(
            label="Show doubt", choices=list(DOUBT_CHOICES), value=next(iter(DOUBT_CHOICES))
        )
        self.show_doubt.tooltip = "the model's doubt as a layer, and the slices to check first"
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.navigator = DoubtNavigator(napari_viewer)
        options = self._folded_options()
        buttons = Container(
            widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False
        )
        buttons.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[
                self.image,
                self.model,
                self.show_doubt,
                buttons,
                self.status,
                self.navigator,
            ]
        )
        # Rarely changed: folded away so that Segment and Fine-tune fit one screen together.
        self.more = collapsible(self, options, "Region, device and post-processing", at=3)
        self._folded = options
        status_line(self.status)
        self.roi.value = None
        self.centre.value = None
        self.job: Job | None = None
        self.last_layer = None
        self.last_measures: LAMeasures | None = None
        self.folder.changed.connect(self._add_folder)
        self.add_hub.changed.connect(self._add_hub_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        follow_known_models(self.model)
        cancel_jobs_on_close(napari_viewer)

    def _folded_options(self) -> Container:
        """The rarely changed choices (region, checkpoint, device, precision, post-processing),
        folded under one heading."""
        self.folder = FileEdit(label="Checkpoint folder", mode="d", value="")
        self.hub_id = LineEdit(label="Hub repo id")
        self.add_hub = PushButton(text="Add hub model")
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.precision = ComboBox(label="Precision", choices=list(PRECISIONS), value="auto")
        self.precision.tooltip = "autocast on a CUDA GPU (auto: bf16); CPUs always run fp32"
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.01, max=0.99, step=0.05)
        self.threshold.tooltip = "the probability above which a voxel is atrium"
        self.roi = create_widget(
            annotation=Shapes, label="ROI rectangle", options={"nullable": True}
        )
        # One click on the atrium of a full field-of-view scan: the model's field of view there.
        self.centre = create_widget(
            annotation=Points, label="Centre (Points)", options={"nullable": True}
        )
        self.morphology = CheckBox(text="Opening + closing", value=True)
        self.largest_cc = CheckBox(text="Keep the largest component", value=True)
        # A checkpoint records whether flip averaging helped on its validation cases; the
        # command line follows that recommendation, and so does this default.
        self.flip_tta = ComboBox(
            label="Flip averaging", choices=list(FLIP_CHOICES), value="as the model recommends"
        )
        return Container(
            widgets=[
                self.roi,
                self.centre,
                self.folder,
                self.hub_id,
                self.add_hub,
                self.device,
                self.batch_size,
                self.precision,
                self.threshold,
                self.morphology,
                self.largest_cc,
                self.flip_tta,
            ]
        )

    def reset_choices(self, *_) -> None:
        """napari refreshes the layer pickers here; the folded ones too."""
        super().reset_choices()
        if getattr(self, "_folded", None) is not None:
            self._folded.reset_choices()

    def _add_folder(self, value):
        if value and str(value) not in ("", ".") and Path(value).is_dir():
            self.select_model(str(value))

    def _add_hub_model(self, _=None):
        if self.hub_id.value.strip():
            self.select_model(self.hub_id.value.strip())

    def select_model(self, source: str) -> None:
        """Add a checkpoint folder or hub id to the model list (if new) and select it."""
        label = KNOWN_MODELS.add(source) if source not in dict(KNOWN_MODELS.choices()) else None
        self.model.reset_choices()
        self.model.value = source
        if label:
            self.status.value = f"model added: {label}"

    def settings(self) -> InferenceSettings:
        """The engine's settings from the dock's choices."""
        return InferenceSettings(
            model=self.model.value,
            device=self.device.value,
            precision=self.precision.value,
            batch_size=self.batch_size.value,
            threshold=self.threshold.value,
            morphology=self.morphology.value,
            largest_cc=self.largest_cc.value,
            flip_tta=FLIP_CHOICES[self.flip_tta.value],
            doubt=DOUBT_CHOICES[self.show_doubt.value],
        )

    def _region(self, image_layer):
        """``(roi, center)`` from the ROI rectangle or the centre point (InputError)."""
        _, meta = layer_volume(image_layer)
        roi = center = None
        if self.roi.value is not None and self.centre.value is not None:
            raise InputError("choose an ROI rectangle or a centre, not both.")
        if self.roi.value is not None:
            roi = roi_from_shapes(self.roi.value, image_layer, meta.through_plane_axis())
        if self.centre.value is not None:
            center = center_from_points(self.centre.value, image_layer)
        return roi, center

    def run(self, _=None) -> Job | None:
        image_layer = self.image.value
        if image_layer is None:
            self.status.value = "not started: no image"
            show_error("Segment: open an image first (File > Open, or File > Open Sample).")
            return None
        self._label = KNOWN_MODELS.label_of(self.model.value)
        try:
            roi, center = self._region(image_layer)
            self.job = start_segmentation(
                self.viewer,
                image_layer,
                self.settings(),
                roi=roi,
                center=center,
                on_event=self._on_event,
                on_done=self._done,
                on_finished=self._finished,
            )
        except InputError as error:
            self.status.value = f"not started: {for_the_gui(str(error))}"
            show_error(f"Segment: {for_the_gui(str(error))}")
            return None
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"segmenting with {self._label}: loading the model..."
        return self.job

    def _on_event(self, event) -> None:
        text = progress_text(self._label, event)
        if text:
            self.status.value = text

    def cancel(self, _=None) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling after the current batch..."

    def _done(self, layer, result: SegmentationResult) -> None:
        self.last_layer, self.last_measures = layer, result.measures
        self.status.value = f"done: {measures_text(result.measures)}"  # the layer is selected
        if result.doubt is not None:
            self.navigator.set_slices(layer, result.slice_axis, list(result.doubtful))

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        error = None if self.job is None else self.job.error
        if error is None:
            return
        if isinstance(error, CancelledError):
            self.status.value = "cancelled: no mask added"
        else:  # the whole sentence (wrapped); a bug's traceback is in the notification
            self.status.value = failure_text(error)
