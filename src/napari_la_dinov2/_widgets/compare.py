"""Compare widget: several models on one image, side by side, with a metrics table.

The worker runs each model through the engine's Predictor and scores the masks with
``evaluation.compare_masks`` (against a reference Labels layer, or pairwise without one). The
widget shows one Labels layer per model in its own colour, a layer of the voxels where the models
disagree, a grid-view toggle, and the table (with each mask's LA volume, surface area and
sphericity, from ``measures.la_measures`` in the worker); selecting a row shows that row's worst
slice.
"""

from __future__ import annotations

import math
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

from ..errors import InputError
from ..evaluation import compare_masks
from ..inference import Predictor
from ..measures import la_measures
from ..metrics import dice, write_cases_csv
from ..models import load_model
from ._layers import (
    file_to_layer_index,
    labels_layer_kwargs,
    layer_view_order,
    layer_volume,
    mask_of,
    on_layer_grid,
)
from ._models import KNOWN_MODELS, device_choices, follow_known_models
from ._worker import Job

MODEL_COLOURS = ["#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
COLUMNS = [  # (row key, short header, header tooltip): short headers keep the table narrow
    ("name", "Model", "the model's mask"),
    ("reference", "Against", "what it is compared with"),
    ("dice", "Dice", "Dice overlap"),
    ("iou", "IoU", "intersection over union"),
    ("hd95_mm", "HD95", "95% Hausdorff distance, mm"),
    ("assd_mm", "ASSD", "average symmetric surface distance, mm"),
    ("volume_ml_pred", "mL", "left-atrium volume of the model's mask, mL"),
    ("surface_area_cm2", "cm²", "surface area of the model's mask (smoothed mesh), cm²"),
    ("sphericity", "Spher.", "sphericity of the model's mask: 1 for a sphere"),
    ("worst_slice", "Worst", "the slice where they overlap least (click the row to go there)"),
]
# Layer names can be long (a case id plus "expert mask"): the name columns are capped at this
# width, elided in the middle, with the full name in the tooltip, so the table fits its panel.
NAME_COLUMN_WIDTH = 110


def worst_slice(a: np.ndarray, b: np.ndarray, slice_axis: int) -> int:
    """The slice (along ``slice_axis``) where ``a`` and ``b`` overlap least, among the slices
    where either has the atrium; the middle slice when neither has any."""
    a, b = np.moveaxis(a != 0, slice_axis, 0), np.moveaxis(b != 0, slice_axis, 0)
    present = [i for i in range(a.shape[0]) if a[i].any() or b[i].any()]
    if not present:
        return a.shape[0] // 2
    return min(present, key=lambda i: dice(a[i], b[i]))


def shape_measures(masks: dict[str, np.ndarray], meta) -> dict[str, dict[str, float]]:
    """Surface area (cm²) and sphericity of each mask (NaN for an empty one): the engine's
    definitions, so the table agrees with ``la-dinov2 mesh``."""
    measures = {}
    for name, mask in masks.items():
        found = la_measures(mask, meta) if np.any(mask) else None
        measures[name] = {
            "surface_area_cm2": found.surface_area_cm2 if found else math.nan,
            "sphericity": found.sphericity if found else math.nan,
        }
    return measures


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return "inf" if math.isinf(value) else f"{value:.3f}"
    return str(value)


class CompareWidget(Container):
    """Plugins > LA DINOv2 > Compare."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        # Layer pickers by annotation: napari keeps them in step with the layer list.
        self.image = create_widget(annotation=Image, label="Image")
        self.models = Select(label="Models", choices=KNOWN_MODELS.choices)
        self.models.native.setMaximumHeight(110)
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
            ]
        )
        self.reference.value = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title, _ in COLUMNS])
        for c, (_, _, tooltip) in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(c).setToolTip(tooltip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(160)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.native.layout().addWidget(self.table)
        self.rows: list[dict] = []
        self.model_layers: list[Labels] = []
        self.disagreement: Labels | None = None
        self._parked: Labels | None = None  # the disagreement layer, out of the list in grid view
        self._backdrops: list[Image] = []
        self._image_layer: Image | None = None
        self._slice_axis = 2
        self.job: Job | None = None
        self.folder.changed.connect(self._add_folder)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(lambda *_: self.job and self.job.cancel())
        self.grid.changed.connect(self.set_grid)
        self.export.changed.connect(self._export_clicked)
        self.table.itemSelectionChanged.connect(self._row_selected)
        follow_known_models(self.models)

    def _add_folder(self, value):
        if value and str(value) not in ("", ".") and Path(value).is_dir():
            KNOWN_MODELS.add(str(value))
            self.models.value = [*self.models.value, str(value)]

    def run(self, _=None) -> Job | None:
        image_layer, sources = self.image.value, list(self.models.value)
        reference_layer = self.reference.value
        try:
            if image_layer is None:
                raise InputError("open an image first.")
            if not sources or (len(sources) < 2 and reference_layer is None):
                raise InputError("select at least two models, or one model and a reference mask.")
            volume, meta = layer_volume(image_layer)
            reference = None
            if reference_layer is not None:
                reference = mask_of(reference_layer, image_layer)  # the image's voxel order
                if reference.shape != volume.shape:
                    raise InputError(
                        f"the reference '{reference_layer.name}' has shape {reference.shape} "
                        f"but the image has {volume.shape}; pick a mask of this image."
                    )
                reference = reference.copy()
        except InputError as error:
            show_error(f"Compare: {error}")
            return None
        labels = {source: KNOWN_MODELS.label_of(source) for source in sources}
        slice_axis = meta.through_plane_axis()
        reference_name = reference_layer.name if reference_layer is not None else "reference"
        device, batch_size = (
            self.device.value,
            self.batch_size.value,
        )  # read widgets here, not in the worker

        def job(report, stop):
            masks = {}
            for i, source in enumerate(sources):
                predictor = Predictor(load_model(source), device=device, batch_size=batch_size)

                def progress(done, total, i=i):
                    report({"done": i * total + done, "total": len(sources) * total})

                masks[labels[source]] = predictor.predict(
                    volume, meta, progress=progress, cancel=stop
                )
            rows = compare_masks(masks, reference, meta.spacing, reference_name)
            shapes = shape_measures(masks, meta)
            for row in rows:
                other = reference if reference is not None else masks[row["reference"]]
                row["worst_slice"] = worst_slice(masks[row["name"]], other, slice_axis)
                row.update(shapes[row["name"]])
            return masks, rows

        self._image_layer, self._slice_axis = image_layer, slice_axis
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
        self.model_layers, self.disagreement = [], None

    def _show(self, result) -> None:
        masks, rows = result
        self._clear_layers()
        image_layer = self._image_layer
        for i, (name, mask) in enumerate(masks.items()):
            colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
            layer = self.viewer.add_labels(
                on_layer_grid(image_layer, mask),  # file order -> as the image is shown
                **labels_layer_kwargs(image_layer, name=name),
                opacity=0.5,
            )
            layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: colour})
            self.model_layers.append(layer)
        votes = np.sum([m != 0 for m in masks.values()], axis=0).astype(np.uint8)
        disagree = np.where((votes > 0) & (votes < len(masks)), votes, 0).astype(np.uint8)
        self.disagreement = self.viewer.add_labels(
            on_layer_grid(image_layer, disagree),
            **labels_layer_kwargs(image_layer, name="models disagree"),
            opacity=0.8,
        )
        self.disagreement.visible = False  # on demand: it hides the masks under it
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
                item = QTableWidgetItem(_format(row.get(key, "")))
                item.setToolTip(item.text())
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        for c, (key, _, _) in enumerate(COLUMNS):
            if key in ("name", "reference"):
                width = min(self.table.columnWidth(c), NAME_COLUMN_WIDTH)
                self.table.setColumnWidth(c, width)

    def set_grid(self, enabled: bool) -> None:
        """One panel per model, each over its own view of the image (the data is shared)."""
        for layer in self._backdrops:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._backdrops = []
        if enabled and self.model_layers and self._image_layer in self.viewer.layers:
            image = self._image_layer
            for layer in self.model_layers:
                backdrop = Image(
                    image.data,
                    name=f"{image.name} under {layer.name}",
                    scale=image.scale,
                    translate=image.translate,
                    affine=image.affine.affine_matrix,
                    colormap=image.colormap,
                    contrast_limits=image.contrast_limits,
                )
                self.viewer.layers.insert(self.viewer.layers.index(layer), backdrop)
                self._backdrops.append(backdrop)
            self.viewer.grid.stride = 2
            # The grid gives every layer pair a panel, hidden or not: the (hidden) disagreement
            # layer would leave an empty one, so it leaves the list while the grid is on.
            if self.disagreement is not None and self.disagreement in self.viewer.layers:
                self.viewer.layers.remove(self.disagreement)
                self._parked = self.disagreement
        else:
            self.viewer.grid.stride = 1
        if not (enabled and self.model_layers) and self._parked is not None:
            if self._parked is self.disagreement and self._parked not in self.viewer.layers:
                self.viewer.layers.append(self._parked)
            self._parked = None
        self.viewer.grid.enabled = bool(enabled and self.model_layers)

    def export_csv(self, path: str | Path) -> Path:
        if not self.rows:
            raise InputError("there is no table yet; run a comparison first.")
        return write_cases_csv(path, self.rows)

    def _export_clicked(self, _=None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Save the comparison table", "compare.csv", "CSV (*.csv)"
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
        for layer in self.model_layers:
            if layer.name == row["name"]:
                self.viewer.layers.selection.active = layer
        self.status.value = f"{row['name']} vs {row['reference']}: worst slice {row['worst_slice']}"
