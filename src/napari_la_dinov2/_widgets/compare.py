"""Compare widget: several models on one image, side by side, with a metrics table.

The worker runs each model through the engine's entry (``segmentation.SegmentationEngine``, as
``la-dinov2 segment`` does) and scores the masks with
``evaluation.compare_masks`` (against a reference Labels layer, or pairwise without one). The
widget shows one Labels layer per model in its own colour, a layer of the voxels where the models
disagree, a grid-view toggle, and the table (with each mask's LA volume, surface area and
sphericity, from the engine's measures); selecting a row shows that row's worst
slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    Select,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QTableWidget, QTableWidgetItem

from .._layer_geometry import (
    file_to_layer_index,
    labels_layer_kwargs,
    layer_view_order,
    layer_volume,
    mask_of,
    on_layer_grid,
    unique_layer_name,
)
from ..errors import InputError
from ..scoring.evaluation import compare_masks
from ..scoring.metrics import write_cases_csv
from ..segmentation import InferenceSettings, SegmentationEngine
from ._colours import DISAGREE_COLOUR, next_mask_colour
from ._comparison import (
    DECIMALS,
    disagreement_layer_name,
    format_value,
    model_layer_name,
    shape_measures,
    viewer_grid,
    worst_slice,
)
from ._models import KNOWN_MODELS, device_choices, follow_known_models, size_model_list
from ._options import ScrollingDock
from ._worker import Job

COLUMNS = [  # (row key, header with its unit (two lines keep it narrow), header tooltip)
    ("name", "Model", "the model's mask"),
    ("reference", "Against", "what it is compared with"),
    ("dice", "Dice", "Dice overlap"),
    ("iou", "IoU", "intersection over union"),
    ("hd95_mm", "HD95\n(mm)", "95% Hausdorff distance, mm"),
    ("assd_mm", "ASSD\n(mm)", "average symmetric surface distance, mm"),
    ("volume_ml_pred", "Vol.\n(mL)", "left-atrium volume of the model's mask, mL"),
    ("surface_area_cm2", "Area\n(cm²)", "surface area of the model's mask (smoothed mesh), cm²"),
    ("sphericity", "Spher.", "sphericity of the model's mask: 1 for a sphere"),
    (
        "worst_slice",
        "Worst\nslice",
        "the slice where they differ most for the atrium's size "
        "there, ignoring slices with a small atrium (click the row to go there)",
    ),
]
# Layer names can be long (a case id plus "expert mask"): the name columns are capped at this
# width, elided in the middle, with the full name in the tooltip, so the table fits its panel.
NAME_COLUMN_WIDTH = 100


def _metrics_table() -> QTableWidget:
    """The read-only table of one row per model, selected a whole row at a time."""
    table = QTableWidget(0, len(COLUMNS))
    table.setHorizontalHeaderLabels([title for _, title, _ in COLUMNS])
    for c, (_, _, tooltip) in enumerate(COLUMNS):
        table.horizontalHeaderItem(c).setToolTip(tooltip)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setMinimumHeight(160)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    return table


def _comparison_job(sources, labels, settings, volume, meta, reference, reference_name):
    """The worker's job: each model segments the volume through the engine, then the masks are
    scored against the reference (or each other) with each row's worst slice and shape."""
    slice_axis = meta.through_plane_axis()

    def job(report, stop):
        masks, measures = {}, {}
        for i, source in enumerate(sources):
            engine = SegmentationEngine(InferenceSettings(model=source, **settings))

            def progress(done, total, i=i):
                report({"done": i * total + done, "total": len(sources) * total})

            result = engine.segment(volume, meta, progress=progress, cancel=stop)
            masks[labels[source]] = result.labels
            measures[labels[source]] = result.measures
        rows = compare_masks(masks, reference, meta.spacing, reference_name)
        shapes = shape_measures(measures)
        for row in rows:
            other = reference if reference is not None else masks[row["reference"]]
            row["worst_slice"] = worst_slice(masks[row["name"]], other, slice_axis, meta.spacing)
            row.update(shapes[row["name"]])
        return masks, rows

    return job


class CompareWidget(ScrollingDock, Container):
    """Plugins > LA DINOv2 > Compare."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        # Layer pickers by annotation: napari keeps them in step with the layer list.
        self.image = create_widget(annotation=Image, label="Image")
        self.models = Select(label="Models", choices=KNOWN_MODELS.choices)
        self.folder = FileEdit(label="Add checkpoint folder", mode="d", value="")
        self.reference = create_widget(
            annotation=Labels, label="Reference mask", options={"nullable": True}
        )
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=512)
        self.run_button = PushButton(text="Compare")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.grid = CheckBox(text="Grid view (one model per panel)", value=False)
        self.export = PushButton(text="Export table as CSV", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.models,
                self.folder,
                self.reference,
                self.device,
                self.batch_size,
                self.run_button,
                self.cancel_button,
                self.grid,
                self.export,
                self.status,
            ],
            scrollable=True,  # every button stays reachable on a short screen
        )
        self.reference.value = None
        self.table = _metrics_table()
        self.inner.layout().addWidget(self.table, stretch=1)
        self.rows: list[dict] = []
        self.model_layers: list[Labels] = []
        self.layer_of: dict[str, Labels] = {}  # a row's model name -> its layer
        self.disagreement: Labels | None = None
        self._backdrops: list[Image] = []
        self._hidden: list = []  # layers hidden while the grid is on (they would get panels)
        self._titled: list[Labels] = []  # masks whose name is on the canvas (grid view)
        self._image_layer: Image | None = None
        self._reference_layer: Labels | None = None
        self._slice_axis = 2
        self.job: Job | None = None
        self._connect()

    def _connect(self) -> None:
        self.folder.changed.connect(self._add_folder)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(lambda *_: self.job and self.job.cancel())
        self.grid.changed.connect(self.set_grid)
        self.export.changed.connect(self._export_clicked)
        self.table.itemSelectionChanged.connect(self._row_selected)
        follow_known_models(self.models)
        size_model_list(self.models)

    def _add_folder(self, value):
        if value and str(value) not in ("", ".") and Path(value).is_dir():
            KNOWN_MODELS.add(str(value))
            self.models.value = [*self.models.value, str(value)]

    def _checked_inputs(self, image_layer, sources, reference_layer):
        """The image volume, its meta and the reference mask in the image's voxel order (or
        None); raises InputError with what to pick when the choices do not make a comparison."""
        if image_layer is None:
            raise InputError("open an image first.")
        if not sources or (len(sources) < 2 and reference_layer is None):
            raise InputError("select at least two models, or one model and a reference mask.")
        volume, meta = layer_volume(image_layer)
        if reference_layer is None:
            return volume, meta, None
        reference = mask_of(reference_layer, image_layer)  # the image's voxel order
        if reference.shape != volume.shape:
            raise InputError(
                f"the reference '{reference_layer.name}' has shape {reference.shape} "
                f"but the image has {volume.shape}; pick a mask of this image."
            )
        return volume, meta, reference.copy()

    def run(self, _=None) -> Job | None:
        image_layer, sources = self.image.value, list(self.models.value)
        reference_layer = self.reference.value
        try:
            volume, meta, reference = self._checked_inputs(image_layer, sources, reference_layer)
        except InputError as error:
            show_error(f"Compare: {error}")
            return None
        labels = {source: KNOWN_MODELS.label_of(source) for source in sources}
        reference_name = reference_layer.name if reference_layer is not None else "reference"
        # read the widgets here, not in the worker
        settings = {"device": self.device.value, "batch_size": self.batch_size.value}
        job = _comparison_job(sources, labels, settings, volume, meta, reference, reference_name)
        self._image_layer, self._slice_axis = image_layer, meta.through_plane_axis()
        self._reference_layer = reference_layer
        self.job = Job(
            job,
            description=f"Comparing {len(sources)} models on '{image_layer.name}'",
            on_done=self._show,
            on_finished=self._finished,
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"running {len(sources)} models..."
        return self.job

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _clear_layers(self) -> None:
        self.set_grid(False)
        for layer in [*self.model_layers, self.disagreement]:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.model_layers, self.disagreement, self.layer_of = [], None, {}

    def _add_mask(self, data: np.ndarray, name: str, colours: dict, opacity: float) -> Labels:
        image_layer = self._image_layer
        name = unique_layer_name(self.viewer, name)
        layer = self.viewer.add_labels(
            on_layer_grid(image_layer, data),  # file order -> as the image is shown
            **labels_layer_kwargs(image_layer, name=name),
            opacity=opacity,
        )
        layer.colormap = DirectLabelColormap(color_dict={None: "transparent", **colours})
        return layer

    def _show(self, result) -> None:
        masks, rows = result
        self._clear_layers()
        case = self._image_layer.name
        for name, mask in masks.items():
            colour = next_mask_colour(self.viewer)  # none of the viewer's masks has it
            layer = self._add_mask(mask, model_layer_name(case, name), {1: colour}, 0.5)
            self.model_layers.append(layer)
            self.layer_of[name] = layer
        votes = np.sum([m != 0 for m in masks.values()], axis=0).astype(np.uint8)
        disagree = np.where((votes > 0) & (votes < len(masks)), votes, 0).astype(np.uint8)
        # Every vote count in one colour that no model layer (nor a default reference) has.
        colours = {v: DISAGREE_COLOUR for v in range(1, len(masks) + 1)}
        self.disagreement = self._add_mask(disagree, disagreement_layer_name(case), colours, 0.7)
        self.rows = rows
        self._fill_table(rows)
        self.export.enabled = True
        self.set_grid(self.grid.value)
        share = float((disagree > 0).sum()) / max(1, int((votes > 0).sum()))
        self.status.value = (
            f"{len(masks)} models; they disagree on {share:.0%} of the voxels any of them marks"
        )

    def _fill_table(self, rows: list[dict]) -> None:
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _, _) in enumerate(COLUMNS):
                item = QTableWidgetItem(format_value(row.get(key, ""), DECIMALS.get(key, 3)))
                item.setToolTip(item.text())
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        for c, (key, _, _) in enumerate(COLUMNS):
            if key in ("name", "reference"):
                width = min(self.table.columnWidth(c), NAME_COLUMN_WIDTH)
                self.table.setColumnWidth(c, width)

    def _panel_masks(self) -> list[Labels]:
        """The masks of the grid's panels, in order: the reference, each model, disagreement."""
        masks = [self._reference_layer, *self.model_layers, self.disagreement]
        return [m for m in masks if m is not None and m in self.viewer.layers]

    def _backdrop(self, image: Image, mask: Labels) -> Image:
        return Image(
            image.data,  # shared, not copied
            name=f"{image.name} under {mask.name}",
            scale=image.scale,
            translate=image.translate,
            affine=image.affine.affine_matrix,
            colormap=image.colormap,
            contrast_limits=image.contrast_limits,
            axis_labels=image.axis_labels,
            units=image.units,  # napari warns when layers' units differ
            metadata=dict(image.metadata),
        )

    def set_grid(self, enabled: bool) -> None:
        """One panel per mask (the reference, each model, their disagreement), each over its
        own view of the image (the data is shared) and titled with the mask's layer name.

        napari's grid puts layers ``2k`` and ``2k + 1`` of the list in panel ``k`` (stride 2)
        and gives no panel to a group of hidden layers: the (image, mask) pairs go to the bottom
        of the list, and the other layers are hidden while the grid is on (shown again after).
        """
        self._leave_grid()
        image = self._image_layer
        if not (enabled and self.model_layers and image in self.viewer.layers):
            return
        layers = self.viewer.layers
        panels = []
        for k, mask in enumerate(self._panel_masks()):
            backdrop = image if k == 0 else self._backdrop(image, mask)
            if k:
                self._backdrops.append(backdrop)
            panels += [backdrop, mask]
        self._hidden = [layer for layer in layers if layer not in panels and layer.visible]
        for layer in self._hidden:
            layer.visible = False
        for position, layer in enumerate(panels):
            if layer in layers:
                layers.move(layers.index(layer), position)
            else:
                layers.insert(position, layer)
            layer.visible = True
            title = layer._overlays.get("layer_name")  # napari >= 0.6
            if isinstance(layer, Labels) and title is not None:
                title.visible = True  # the panel's title
                self._titled.append(layer)
        grid = viewer_grid(self.viewer)
        grid.stride, grid.enabled = 2, True

    def _leave_grid(self) -> None:
        """Back to one view: backdrops gone, the hidden layers shown, titles off."""
        for layer in self._backdrops:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._backdrops = []
        for layer in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden = []
        for layer in self._titled:
            layer._overlays["layer_name"].visible = False
        self._titled = []
        grid = viewer_grid(self.viewer)
        grid.enabled, grid.stride = False, 1

    def export_csv(self, path: str | Path) -> Path:
        if not self.rows:
            raise InputError("there is no table yet; run a comparison first.")
        return write_cases_csv(path, self.rows)

    def _export_clicked(self, _=None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.inner, "Save the comparison table", "compare.csv", "CSV (*.csv)"
        )
        if path:
            show_info(f"table saved to {self.export_csv(path)}")

    def _row_selected(self) -> None:
        selected = self.table.selectionModel().selectedRows()
        if selected:
            self.go_to_row(selected[0].row())

    def go_to_row(self, index: int) -> None:
        """Show the row's model layer and move the viewer to its worst slice."""
        row = self.rows[index]
        image = self._image_layer
        if image is None or image not in self.viewer.layers:
            return
        axis = self._slice_axis  # the file's slice axis; the image may be shown reordered
        centre = (np.asarray(layer_volume(image)[0].shape, float) - 1) / 2
        centre[axis] = row["worst_slice"]
        world = np.asarray(image.data_to_world(file_to_layer_index(image, centre)), float)
        dims = self.viewer.dims
        order = layer_view_order(image, axis, dims.ndim)
        if dims.ndisplay == 2 and order[-3] not in dims.not_displayed:
            dims.order = order
            self.viewer.reset_view()
        first = dims.ndim - len(world)  # world axes of this image among the viewer's axes
        dims.set_point(range(first, dims.ndim), world)
        layer = self.layer_of.get(row["name"])
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer
        self.status.value = f"{row['name']} vs {row['reference']}: worst slice {row['worst_slice']}"
