"""What a new user tripped over (issue 22), each checked as a user meets it under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2._widgets._doubt import add_doubt_layer, is_doubt_layer
from napari_la_dinov2._widgets.surface import SurfaceWidget

pytestmark = pytest.mark.gui


def _sliders(viewer):
    """(steps, step in mm) of each slider axis, and where the slider is."""
    dims = viewer.dims
    return [(dims.nsteps[a], dims.range[a].step) for a in range(dims.ndim)], dims.current_step


def test_the_slider_still_counts_slices_after_a_3d_surface_and_3d_is_uncluttered(
    make_napari_viewer, qtbot, small_case, add_case
):
    name, image, labels, meta = small_case
    # The atrium through every slice: the mesh then reaches half a voxel past the first and
    # last slice centres, beyond the image's own extent.
    labels = np.repeat(labels.max(axis=2, keepdims=True), labels.shape[2], axis=2)
    viewer = make_napari_viewer()
    image_layer, mask = add_case(viewer, (name, image, labels, meta))
    other = viewer.add_labels(mask.data.copy(), name="another mask", scale=mask.scale,
                              translate=mask.translate, axis_labels=mask.axis_labels,
                              units=mask.units)  # fmt: skip
    doubt = add_doubt_layer(viewer, image_layer, labels.astype(np.float32) * 0.3, "doubt")
    assert is_doubt_layer(doubt) and not is_doubt_layer(other)
    viewer.dims.set_current_step(0, 7)
    before, _ = _sliders(viewer)
    assert before[0] == (labels.shape[2], pytest.approx(1.25))  # 12 steps of 1.25 mm

    widget = SurfaceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Surface")
    widget.image.value, widget.mask.value = image_layer, mask
    job = widget.show_surface()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    surface = widget.surface_layer
    assert viewer.dims.ndisplay == 3 and surface.visible and surface._type_string == "surface"
    # 3D: no mask blocks, no doubt glow over the surface; the image stays as the backdrop.
    assert not any(layer.visible for layer in (mask, other, doubt)) and image_layer.visible
    # The camera is fitted on the surface (its centre), not on the whole volume.
    vertices = np.asarray(surface.data[0]) * np.asarray(surface.scale)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    assert np.allclose(viewer.camera.center, centre, atol=1e-3)
    assert np.allclose(_sliders(viewer)[0], before)  # the surface changed no slider

    viewer.dims.ndisplay = 2
    after, step = _sliders(viewer)
    assert after == before, (before, after)  # still 12 steps of 1.25 mm: one per slice
    assert all(layer.visible for layer in (mask, other, doubt))  # back as they were
    # Every slider step is a distinct slice of the image (none repeats).
    shown = set()
    for index in range(after[0][0]):
        viewer.dims.set_current_step(0, index)
        world = viewer.dims.point[0]
        shown.add(int(round(image_layer.world_to_data([world, 0, 0])[0])))
    assert shown == set(range(labels.shape[2]))


def test_fewshot_cancel_says_so_names_no_missing_file_and_the_plot_moves_during_a_run(
    make_napari_viewer, qtbot, case_folder, tiny_checkpoint, tmp_path
):
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.fewshot import RESULT_FILES, FewShotWidget
    from napari_la_dinov2.training.events import EpochDone

    viewer = make_napari_viewer()
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Few-shot")
    widget.picker.folder.value = str(case_folder)
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget.models.value = [str(tiny_checkpoint)]
    widget.patients.value, widget.seeds.value = "1, all", "0"
    widget.epochs.value, widget.batch_size.value = 3, 4
    widget.output.value = str(tmp_path / "fewshot")
    seen = {}
    handle = widget._on_event

    def on_event(event):  # Cancel pressed once the first run has validated an epoch
        handle(event)
        if isinstance(event, EpochDone) and not seen:
            seen["validation"] = widget.curve.running_dice
            widget.cancel_button.clicked.emit()

    widget._on_event = on_event
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    # During the run the plot showed the running run's validation Dice, before any test dot.
    assert seen["validation"] is not None and 0.0 <= seen["validation"] <= 1.0
    status = widget.status.value
    assert status.startswith("cancelled after 0 of 2 runs"), status
    for name in RESULT_FILES:  # named only if written
        assert (name in status) == (tmp_path / "fewshot" / name).is_file(), (name, status)
    assert "no result files written" in status
