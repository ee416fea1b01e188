"""Compare widget end to end: two checkpoints and a reference on the synthetic case."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_la_dinov2._layer_geometry import layer_volume
from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets.compare import COLUMNS, CompareWidget, viewer_grid, worst_slice
from napari_la_dinov2.measures import la_measures

pytestmark = pytest.mark.gui


def test_worst_slice_is_the_least_overlapping():
    a = np.zeros((8, 8, 4), np.uint8)
    a[2:6, 2:6, :] = 1
    b = a.copy()
    b[:, :, 3] = 0
    b[2:6, 2:4, 1] = 0  # slice 1 half missing, slice 3 entirely missing
    assert worst_slice(a, b, 2) == 3


def test_worst_slice_ignores_a_small_blob_at_the_edge():
    """A 1 cm blob one model marks beyond the atrium's end (Dice 0 on that slice) is not the
    worst slice: the mid-atrium slice where a fifth of the atrium is missed is."""
    a = np.zeros((60, 60, 20), np.uint8)
    a[10:50, 10:50, 4:16] = 1  # 25 x 25 mm of atrium on 0.625 mm pixels
    b = a.copy()
    b[10:18, 10:50, 9] = 0  # slice 9: a fifth of it missed
    a[20:28, 20:28, 16] = 1  # slice 16: a 5 x 5 mm blob in one mask only
    spacing = (0.625, 0.625, 1.25)
    assert worst_slice(a, b, 2, spacing) == 9
    # Along another axis, with the spacing of that axis' plane.
    assert worst_slice(np.moveaxis(a, 2, 0), np.moveaxis(b, 2, 0), 0, spacing[::-1]) == 9


def _rgb(layer, value=1):
    return np.asarray(layer.colormap.map(value)).ravel()[:3]


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

    _check_model_layers(widget, image, mask, foreground_checkpoint)
    _check_table(widget, mask, meta=small_case[3])
    _check_row_selection_goes_to_the_worst_slice(viewer, widget)
    _check_grid_view(viewer, widget, image, mask)
    path = widget.export_csv(tmp_path / "table.csv")
    with open(path) as handle:
        exported = list(csv.DictReader(handle))
    assert [r["name"] for r in exported] == [r["name"] for r in widget.rows]
    assert float(exported[1]["dice"]) == pytest.approx(widget.rows[1]["dice"])


def _check_model_layers(widget, image, mask, foreground_checkpoint):
    """One Labels layer per model, aligned, in distinct colours, named after the case and the
    model, and a disagreement layer shown in a colour of its own."""
    assert len(widget.model_layers) == 2
    # In the list's order (the newest checkpoint first); not named as Segment names its mask.
    labels = [KNOWN_MODELS.label_of(source) for source in widget.models.value]
    assert [layer.name for layer in widget.model_layers] == [
        f"{image.name} LA compared: {label}" for label in labels
    ]
    colours = [_rgb(layer) for layer in widget.model_layers]
    assert np.abs(colours[0] - colours[1]).max() > 0.2
    assert widget.disagreement.visible
    assert "disagree" in widget.disagreement.name and "magenta" in widget.disagreement.name
    shown = _rgb(widget.disagreement, 1)  # two models: one vote
    for other in [*colours, _rgb(mask)]:
        assert np.abs(shown - other).max() > 0.3, (shown, other)
    for layer in widget.model_layers:
        assert np.allclose(layer.scale, image.scale)
        assert np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
    # The biased model marks nearly everything (the opening trims the volume's border).
    biased = widget.layer_of[KNOWN_MODELS.label_of(str(foreground_checkpoint))]
    assert biased.data.mean() > 0.9
    votes = sum((layer.data != 0).astype(int) for layer in widget.model_layers)
    assert np.array_equal(widget.disagreement.data != 0, votes == 1)


def _check_table(widget, mask, meta):
    """One row per model against the reference, with the real metrics."""
    assert widget.table.rowCount() == 2
    row = widget.rows[1]
    truth = mask.data != 0
    assert row["reference"] == mask.name
    pred = widget.model_layers[1].data != 0
    expected = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert row["dice"] == pytest.approx(expected)
    assert widget.table.item(1, 2).text() == f"{row['dice']:.3f}"
    headers = [
        widget.table.horizontalHeaderItem(c).text().replace("\n", " ") for c in range(len(COLUMNS))
    ]
    # Beside the volume, each mask's surface area and sphericity, as `la-dinov2 mesh` gives them
    # (not a number for an empty mask, which has no surface).
    for index, (layer, shown_row) in enumerate(zip(widget.model_layers, widget.rows, strict=True)):
        if not layer.data.any():
            assert math.isnan(shown_row["surface_area_cm2"]), layer.name
            continue
        shown = la_measures(layer_volume(layer)[0], meta)
        assert shown_row["surface_area_cm2"] == pytest.approx(shown.surface_area_cm2)
        assert shown_row["sphericity"] == pytest.approx(shown.sphericity)
        assert widget.table.item(index, headers.index("Spher.")).text() == (
            f"{shown.sphericity:.3f}"
        )
    # Units in the headers themselves, not only in tooltips.
    assert {"HD95 (mm)", "ASSD (mm)", "Vol. (mL)", "Area (cm²)"} <= set(headers)


def _check_row_selection_goes_to_the_worst_slice(viewer, widget):
    """Selecting a row moves the viewer to that model's worst slice, slider on the slice axis
    (the layer's first axis: z, not reversed, in the acquisition plane)."""
    widget.table.selectRow(0)
    step = viewer.dims.current_step[0]
    assert step == widget.rows[0]["worst_slice"]
    assert 0 not in viewer.dims.displayed
    assert viewer.layers.selection.active is widget.model_layers[0]


def _check_grid_view(viewer, widget, image, mask):
    """Grid view with other layers about (a mask of another model, a points layer): each panel
    holds the image and one mask (reference, each model, disagreement), titled with its name."""
    other_mask = viewer.add_labels(np.zeros_like(mask.data), name="old mask")
    viewer.add_points(np.zeros((1, 3)), name="clicks")
    viewer.layers.move(viewer.layers.index(other_mask), 0)
    widget.grid.value = True
    assert viewer_grid(viewer).enabled and len(widget._backdrops) == 3
    panels = {}
    for index, layer in enumerate(viewer.layers):
        where = viewer_grid(viewer).position(index, viewer.layers)
        if where != (-1, -1):
            panels.setdefault(where, []).append(layer)
    expected = [mask, *widget.model_layers, widget.disagreement]
    assert len(panels) == len(expected)
    for layers in panels.values():
        kinds = sorted(type(layer).__name__ for layer in layers)
        assert kinds == ["Image", "Labels"], [layer.name for layer in layers]
        backdrop, shown_mask = sorted(layers, key=lambda layer: type(layer).__name__)
        assert backdrop.data is image.data and shown_mask in expected
        assert shown_mask._overlays["layer_name"].visible  # the panel's title
    assert sorted(map(id, (ls[1] for ls in panels.values()))) == sorted(map(id, expected))
    widget.grid.value = False
    assert not viewer_grid(viewer).enabled and not widget._backdrops
    assert other_mask.visible and viewer.layers["clicks"].visible
    assert not any(layer._overlays["layer_name"].visible for layer in viewer.layers)


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
    second = list(widget.models.value)[1]  # the list's order: the newest checkpoint first
    assert widget.rows[0]["reference"] == KNOWN_MODELS.label_of(second)


def test_model_list_shows_the_trained_models_and_the_selection(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare")
    for i in range(5):  # five fine-tuned checkpoints of a session
        (tmp_path / f"run{i}" / "best").mkdir(parents=True)
        KNOWN_MODELS.add(str(tmp_path / f"run{i}" / "best"))
    view = widget.models.native
    qtbot.wait(100)  # the layout settles
    rows = view.viewport().height() // view.sizeHintForRow(0)
    assert rows >= 1 + 5 + 2  # the embedded default, the five checkpoints, and more
    last = KNOWN_MODELS.choices()[-1][1]  # a registry name at the end of the list
    widget.models.value = [last]
    qtbot.wait(50)
    item = view.selectedItems()[0]
    assert view.viewport().rect().contains(view.visualItemRect(item))
