"""Compare widget end to end: two checkpoints and a reference on the synthetic case."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_la_dinov2._widgets._layers import layer_volume
from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets.compare import COLUMNS, CompareWidget, worst_slice
from napari_la_dinov2.measures import la_measures

pytestmark = pytest.mark.gui


def test_worst_slice_is_the_least_overlapping():
    a = np.zeros((8, 8, 4), np.uint8)
    a[2:6, 2:6, :] = 1
    b = a.copy()
    b[:, :, 3] = 0
    b[2:6, 2:4, 1] = 0  # slice 1 half missing, slice 3 entirely missing
    assert worst_slice(a, b, 2) == 3


def test_compare_two_models_against_reference(
    make_napari_viewer,
    qtbot,
    small_case,
    tiny_checkpoint,
    foreground_checkpoint,
    add_case,
    tmp_path,
):
    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare")
    for checkpoint in (tiny_checkpoint, foreground_checkpoint):
        KNOWN_MODELS.add(str(checkpoint))
    widget.models.value = [str(tiny_checkpoint), str(foreground_checkpoint)]
    widget.image.value, widget.reference.value = image, mask
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is None, job.error

    # One Labels layer per model, aligned, in distinct colours, and a disagreement layer.
    assert len(widget.model_layers) == 2
    colours = [tuple(layer.colormap.map(1).ravel().round(3)) for layer in widget.model_layers]
    assert colours[0] != colours[1]
    for layer in widget.model_layers:
        assert np.allclose(layer.scale, image.scale)
        assert np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
    # The biased model marks nearly everything (the opening trims the volume's border).
    assert widget.model_layers[1].data.mean() > 0.9
    votes = sum((layer.data != 0).astype(int) for layer in widget.model_layers)
    assert np.array_equal(widget.disagreement.data != 0, votes == 1)

    # The table: one row per model against the reference, with the real metrics.
    assert widget.table.rowCount() == 2
    row = widget.rows[1]
    truth = mask.data != 0
    assert row["reference"] == mask.name
    pred = widget.model_layers[1].data != 0
    expected = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert row["dice"] == pytest.approx(expected)
    assert widget.table.item(1, 2).text() == f"{row['dice']:.3f}"
    # Beside the volume, each mask's surface area and sphericity, as `la-dinov2 mesh` gives them.
    shown = la_measures(layer_volume(widget.model_layers[1])[0], small_case[3])
    assert row["surface_area_cm2"] == pytest.approx(shown.surface_area_cm2)
    assert row["sphericity"] == pytest.approx(shown.sphericity)
    headers = [widget.table.horizontalHeaderItem(c).text() for c in range(len(COLUMNS))]
    assert widget.table.item(1, headers.index("Spher.")).text() == f"{shown.sphericity:.3f}"

    # Selecting a row moves the viewer to that model's worst slice, slider on the slice axis
    # (the layer's first axis: z, not reversed, in the acquisition plane).
    widget.table.selectRow(0)
    step = viewer.dims.current_step[0]
    assert step == widget.rows[0]["worst_slice"]
    assert 0 not in viewer.dims.displayed
    assert viewer.layers.selection.active is widget.model_layers[0]

    # Grid view: one panel per model, each with its own view of the image.
    widget.grid.value = True
    assert viewer.grid.enabled and len(widget._backdrops) == 2
    assert widget.disagreement not in viewer.layers  # hidden: it would get an empty panel
    widget.grid.value = False
    assert not viewer.grid.enabled and not widget._backdrops
    assert widget.disagreement in viewer.layers

    path = widget.export_csv(tmp_path / "table.csv")
    with open(path) as handle:
        exported = list(csv.DictReader(handle))
    assert [r["name"] for r in exported] == [r["name"] for r in widget.rows]
    assert float(exported[1]["dice"]) == pytest.approx(row["dice"])


def test_compare_pairwise_without_reference(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, foreground_checkpoint, add_case
):
    viewer = make_napari_viewer()
    add_case(viewer, small_case)
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare")
    for checkpoint in (tiny_checkpoint, foreground_checkpoint):
        KNOWN_MODELS.add(str(checkpoint))
    widget.models.value = [str(tiny_checkpoint), str(foreground_checkpoint)]
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is None, job.error
    assert len(widget.rows) == 1
    assert widget.rows[0]["reference"] == KNOWN_MODELS.label_of(str(foreground_checkpoint))
