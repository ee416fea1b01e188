"""Segment widget end to end: a tiny checkpoint chosen as a folder, on the synthetic case."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2._layer_geometry import META_KEY, file_to_layer_index, layer_volume
from napari_la_dinov2._widgets.segment import SegmentWidget

pytestmark = pytest.mark.gui


def _dock(viewer):
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    return widget


def test_segment_adds_aligned_labels_layer(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, add_case
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget = _dock(viewer)
    widget.image.value = image
    widget.select_model(str(tiny_checkpoint))
    widget.batch_size.value = 4
    job = widget.run()
    assert job is not None and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None
    layer = widget.last_layer
    assert layer.name.startswith("synthetic LA (") and layer.name.endswith("tiny-unet)")
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint8
    assert np.allclose(layer.scale, image.scale)
    assert np.allclose(layer.translate, image.translate)
    assert np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
    assert layer.metadata[META_KEY] is image.metadata[META_KEY]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_segment_roi_from_rectangle(
    make_napari_viewer, qtbot, small_case, foreground_checkpoint, add_case
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    # A rectangle drawn in world (mm) coordinates on slice 2, spanning file voxels 20-60 along
    # x and 30-70 along y (the image is shown in its acquisition plane: z first).
    corners_index = np.array([[20, 30, 2], [20, 70, 2], [60, 70, 2], [60, 30, 2]], float)
    corners_index = file_to_layer_index(image, corners_index)
    corners_world = np.array([image.data_to_world(c) for c in corners_index])
    shapes = viewer.add_shapes([corners_world], shape_type="rectangle", name="roi")
    widget = _dock(viewer)
    widget.image.value = image
    widget.roi.value = shapes
    widget.select_model(str(foreground_checkpoint))
    widget.morphology.value = widget.largest_cc.value = False
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    mask, _ = layer_volume(widget.last_layer)  # in the file's voxel order
    expected = np.zeros_like(mask)
    expected[20:61, 30:71, :] = 1  # the drawn slice does not limit depth: all slices
    assert np.array_equal(mask, expected)


def test_segment_error_is_a_notification(
    make_napari_viewer, qtbot, small_case, notifications, add_case, tmp_path
):
    viewer = make_napari_viewer()
    add_case(viewer, small_case)
    widget = _dock(viewer)
    missing = str(tmp_path / "no" / "such-checkpoint")
    widget.select_model(missing)
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is not None
    assert len(notifications["error"]) == 1
    assert missing in notifications["error"][0]
    assert notifications["traceback"] == []  # bad input: one sentence, no traceback
    assert widget.run_button.enabled
    assert len(viewer.layers) == 2  # nothing added


def test_segment_cancel_keeps_viewer_usable(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, notifications, add_case
):
    viewer = make_napari_viewer()
    add_case(viewer, small_case)
    widget = _dock(viewer)
    widget.select_model(str(tiny_checkpoint))
    widget.batch_size.value = 1
    job = widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert "cancelled" in notifications["info"][0]
    assert len(viewer.layers) == 2


def test_flip_averaging_follows_the_checkpoint_like_the_command_line(
    make_napari_viewer, qtbot, small_case, add_case, tmp_path
):
    # A checkpoint may recommend flip averaging or not; the widget's default must give the same
    # mask as `la-dinov2 segment` (the Predictor's own default) either way, not override it.
    from napari_la_dinov2.inference import Predictor
    from napari_la_dinov2.models import load_model, save_checkpoint

    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget = _dock(viewer)
    widget.image.value = image
    _, volume, _, meta = small_case
    shipped = load_model("default").provenance["inference"]["flip_tta"]
    opposite = load_model("default")
    opposite.provenance["inference"] = {"flip_tta": not shipped}
    save_checkpoint(opposite, tmp_path / "opposite")
    for source, recommended in (("default", shipped), (str(tmp_path / "opposite"), not shipped)):
        if source == "default":
            widget.model.value = source
        else:
            widget.select_model(source)  # as the "Add checkpoint folder" button does
        assert widget.flip_tta.value == "as the model recommends"
        job = widget.run()
        qtbot.waitUntil(lambda job=job: job.finished, timeout=600_000)  # three UNets, busy CPU
        assert job.error is None
        predictor = Predictor(load_model(source), device="cpu", batch_size=8)
        assert predictor.flip_tta is recommended
        shown = layer_volume(widget.last_layer)[0]
        np.testing.assert_array_equal(shown, predictor.predict(volume, meta))


def test_measures_in_the_status_and_warnings_as_notifications(
    make_napari_viewer, qtbot, small_case, foreground_checkpoint, add_case, notifications
):
    from napari_la_dinov2.measures import la_measures, plausibility_warnings

    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget = _dock(viewer)
    widget.image.value = image
    widget.select_model(str(foreground_checkpoint))  # marks the whole volume: touches its border
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    mask, meta = layer_volume(widget.last_layer)
    expected = la_measures(mask, meta)
    status = widget.status.value
    for text in (
        f"{expected.volume_ml:.1f} mL",
        f"{expected.surface_area_cm2:.1f} cm²",
        f"sphericity {expected.sphericity:.2f}",
        f"max diameter {expected.max_diameter_mm:.1f} mm",
    ):
        assert text in status, (text, status)
    sentences = plausibility_warnings(mask, meta, expected)
    assert any("touches the border" in s for s in sentences)
    # The random-weight model warns first, from the worker (warnings.warn), then the mask's.
    untrained, *shown = notifications["warning"]
    assert "no trained segmentation weights" in untrained
    assert len(shown) == len(sentences)
    for sentence, message in zip(sentences, shown):
        assert message.endswith(sentence)
