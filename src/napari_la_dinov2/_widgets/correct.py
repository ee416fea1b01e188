"""Correct widget: fix a mask by clicking, the click model updating it near each click.

"Start clicking" pairs a Points layer "<mask> clicks" with the chosen mask and makes it the
active layer in add mode: each point is a click, positive (green: this belongs to the atrium)
or, with "Clicks remove" ticked or Alt held while clicking, negative (red: this does not). Each
click runs :meth:`ClickSession.apply` in a worker (one at a time; clicks made meanwhile wait
their turn) and the Labels layer changes in place, only in the click's window. Brush edits are
kept by later clicks; "Undo click" (or Ctrl+Z on the clicks layer) takes the last click back.
"Draw a stroke" adds a Shapes layer in path mode: a stroke drawn on a slice (click its
vertices, double-click to end) becomes clicks every half window along it, with the clicks'
current sign: a scribble over a missed or wrongly taken region.
The mask keeps the model's own mask in its metadata, so the Fine-tune dock weighs the slices
changed by clicks as it weighs brush corrections.
"""

from __future__ import annotations

import functools

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, PushButton, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_error

from .._layer_geometry import (
    layer_to_file_index,
    layer_volume,
    mask_of,
    on_layer_grid,
    unique_layer_name,
)
from ..errors import InputError
from ..interactive import Click, ClickSession, Refiner, load_click_model
from ..interactive.clicks import stroke_points
from ._worker import Job, cancel_jobs_on_close

POSITIVE, NEGATIVE = "#3ddc84", "#ff4d4d"


@functools.cache  # the click model is loaded once per process
def shared_refiner() -> Refiner:
    return Refiner(load_click_model())


class CorrectWidget(Container):
    """Plugins > LA DINOv2 > Correct."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="Image")
        self.mask = create_widget(annotation=Labels, label="Mask")
        self.start_button = PushButton(text="Start clicking")
        self.negative = CheckBox(text="Clicks remove (or hold Alt while clicking)", value=False)
        self.undo_button = PushButton(text="Undo click")
        self.stroke_button = PushButton(text="Draw a stroke")
        self.status = Label(value="pick the image and its mask, then Start clicking")
        buttons = [self.start_button, self.negative, self.undo_button, self.stroke_button]
        super().__init__(widgets=[self.image, self.mask, *buttons, self.status])
        self.session: ClickSession | None = None
        self.points = None
        self.stroke = None
        self.pending: list[Click] = []
        self.job: Job | None = None
        self._alt = False
        self._quiet = False  # set while the widget itself edits the points
        self.start_button.changed.connect(self.start)
        self.undo_button.changed.connect(self.undo)
        self.stroke_button.changed.connect(self.draw_stroke)
        self.negative.changed.connect(self._sign_changed)
        cancel_jobs_on_close(napari_viewer)

    # --- starting ---------------------------------------------------------------------------
    def start(self, _=None):
        """Prepare the volume (in a worker) and add the clicks layer."""
        image, labels = self.image.value, self.mask.value
        try:
            if image is None or labels is None:
                raise InputError("open an image and its mask (a Labels layer) first.")
            volume, meta = layer_volume(image)
            if np.shape(mask_of(labels, image)) != tuple(meta.shape):
                raise InputError(f"the mask '{labels.name}' is not on the grid of '{image.name}'.")
        except InputError as error:
            show_error(f"Correct: {error}")
            return None

        def prepare(report, stop):
            refiner = shared_refiner()
            return ClickSession(refiner, refiner.prepare(volume, meta))

        def ready(session):
            self.session = session
            self._add_points_layer(image, labels)
            self.status.value = "click where the mask is wrong"

        self.status.value = "loading the click model..."
        self.job = Job(prepare, description="Preparing clicks", on_done=ready)
        return self.job

    def _add_points_layer(self, image, labels):
        name = unique_layer_name(self.viewer, f"{labels.name} clicks")
        layer = self.viewer.add_points(
            np.empty((0, 3)),
            name=name,
            ndim=3,
            size=6,
            border_width=0,
            scale=tuple(image.scale),
            translate=tuple(image.translate),
            affine=image.affine.affine_matrix.copy(),
            axis_labels=tuple(image.axis_labels),
            units=tuple(str(u) for u in image.units),  # as the image: no mixed-units warning
            face_color=self._colour(),
            features={"positive": np.empty(0, bool)},
        )
        layer.events.data.connect(self._points_changed)
        layer.mouse_drag_callbacks.insert(0, self._remember_modifiers)
        layer.bind_key("Control-z", lambda _layer: self.undo(), overwrite=True)
        layer.mode = "add"
        self.viewer.layers.selection.active = layer
        self.points = layer

    def _colour(self) -> str:
        return NEGATIVE if self.negative.value else POSITIVE

    def _sign_changed(self, _=None):
        if self.points is not None:
            self.points.current_face_color = self._colour()

    def _remember_modifiers(self, layer, event):
        self._alt = "Alt" in {str(getattr(m, "name", m)) for m in event.modifiers}

    # --- clicks ----------------------------------------------------------------------------
    def _points_changed(self, event):
        if self._quiet or getattr(event, "action", "added") != "added":
            return
        # napari counts added rows from the end (-3, -2, -1 for three points added at once)
        for row in getattr(event, "data_indices", None) or [-1]:
            self._clicked(int(row) % len(self.points.data))

    def _clicked(self, row: int):
        image = self.image.value
        positive = not (self.negative.value or self._alt)
        self._quiet = True
        try:
            self.points.features.loc[row, "positive"] = positive
            colours = self.points.face_color
            colours[row] = np.array(_rgba(POSITIVE if positive else NEGATIVE))
            self.points.face_color = colours
        finally:
            self._quiet = False
        world = np.asarray(self.points.data_to_world(self.points.data[row]), dtype=float)
        index = layer_to_file_index(image, np.asarray(image.world_to_data(world), float)[None])
        position = tuple(int(v) for v in np.round(index[0]))
        self.pending.append(Click(position, positive))
        self._next()

    def _next(self):
        if self.job is not None and self.job.running or not self.pending:
            return
        click = self.pending.pop(0)
        current = np.array(mask_of(self.mask.value, self.image.value), dtype=np.uint8)
        session = self.session

        def job(report, stop):
            return session.apply(click, current)

        self.status.value = f"{'adding' if click.positive else 'removing'} at {click.position}..."
        self.job = Job(
            job,
            description="Click",
            on_done=self._show,
            on_failed=self._failed,
            on_finished=self._next,
        )
        return self.job

    def _show(self, result):
        mask, window = result
        self._write(mask, window)
        self.status.value = f"{len(self.session.steps)} click(s); {int(mask.sum())} voxels"

    def _failed(self, error):
        self.pending.clear()
        self._drop_last_point()

    def _write(self, mask: np.ndarray, window):
        """Put ``mask`` (file order) into the Labels layer, only where it changed."""
        labels = self.mask.value
        shown = on_layer_grid(self.image.value, mask)
        changed = np.asarray(labels.data) != shown
        if changed.any():
            labels.data[changed] = shown[changed]
            labels.refresh()

    # --- strokes ---------------------------------------------------------------------------
    def draw_stroke(self, _=None):
        """Add (or bring back) the stroke layer, in path mode, on the clicks' grid."""
        if self.points is None or self.points not in self.viewer.layers:
            show_error("Correct: press Start clicking first; a stroke becomes clicks.")
            return None
        if self.stroke is None or self.stroke not in self.viewer.layers:
            points = self.points
            self.stroke = self.viewer.add_shapes(
                name=unique_layer_name(self.viewer, f"{self.mask.value.name} stroke"),
                ndim=3,
                scale=tuple(points.scale),
                translate=tuple(points.translate),
                affine=points.affine.affine_matrix.copy(),
                axis_labels=tuple(points.axis_labels),
                units=tuple(str(u) for u in points.units),
                edge_width=2,
                edge_color=self._colour(),
            )
            self.stroke.events.data.connect(self._stroke_drawn)
        self.stroke.current_edge_color = self._colour()
        self.stroke.mode = "add_path"
        self.viewer.layers.selection.active = self.stroke
        self.status.value = "draw the stroke: click along it, double-click to end"
        return self.stroke

    def _stroke_drawn(self, event):
        if self._quiet or getattr(event, "action", "added") != "added" or not len(self.stroke.data):
            return
        step = shared_refiner().model.window_mm / 2
        along = stroke_points(self.stroke.data[-1], tuple(self.image.value.scale), step)
        self._quiet = True
        try:  # the stroke itself goes: its clicks (points) are what stays and can be undone
            self.stroke.data = []
        finally:
            self._quiet = False
        self.viewer.layers.selection.active = self.points
        self._alt = False  # the stroke has the toggle's sign, whatever the last click held
        self.points.add(along)

    # --- undo ------------------------------------------------------------------------------
    def undo(self, _=None):
        if self.session is None or (self.job is not None and self.job.running):
            return None
        current = np.array(mask_of(self.mask.value, self.image.value), dtype=np.uint8)
        undone = self.session.undo(current)
        if undone is None:
            self.status.value = "no click to undo"
            return None
        self._write(*undone)
        self._drop_last_point()
        self.status.value = f"{len(self.session.steps)} click(s) left"
        return undone

    def _drop_last_point(self):
        if self.points is not None and len(self.points.data):
            self._quiet = True
            try:
                self.points.data = self.points.data[:-1]
            finally:
                self._quiet = False


def _rgba(colour: str):
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(colour)[0]
