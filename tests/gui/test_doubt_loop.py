"""Segment's side of the correction loop: the doubt layer and the doubtful slices, the mask
named after the case with the model's own mask kept, and a status line for every end state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_la_dinov2 import build_model, save_checkpoint
from napari_la_dinov2._layer_geometry import PREDICTION_KEY, layer_to_file_index, mask_of
from napari_la_dinov2._widgets._doubt import DOUBT_SLICES, NEXT_KEY, PREVIOUS_KEY
from napari_la_dinov2._widgets.segment import SegmentWidget
from napari_la_dinov2.doubt import rank_slices
from napari_la_dinov2.models.packing import ensemble_of
from tests.gui.conftest import TINY_UNET

pytestmark = pytest.mark.gui
VIEWS = ["through-plane", "in-plane-1"]


@pytest.fixture(scope="module")
def two_view_checkpoint(tmp_path_factory):
    """A tiny two-branch model (one UNet per view) whose members disagree somewhere."""
    members = []
    for seed, view in zip((1, 2), VIEWS):
        torch.manual_seed(seed)
        member = build_model("unet", preprocessing={"input_size": 64, "views": [view]}, **TINY_UNET)
        with torch.no_grad():
            for tensor in member.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor) * 0.3)
        members.append(member.eval())
    return save_checkpoint(ensemble_of(members), tmp_path_factory.mktemp("ckpt") / "two-view")


def _segment(viewer, qtbot, widget, image, source, doubt="for models with several branches"):
    widget.image.value = image
    widget.select_model(str(source))
    widget.show_doubt.value = doubt
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    return widget.last_layer


def test_doubt_layer_and_doubtful_slices(
    make_napari_viewer, qtbot, small_case, two_view_checkpoint, add_case
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    seen, on_event = [], widget._on_event

    def watched(event):
        on_event(event)
        seen.append(widget.status.value)

    widget._on_event = watched
    mask = _segment(viewer, qtbot, widget, image, two_view_checkpoint)
    assert any("%" in text for text in seen)  # progress as a percentage
    label = widget._label
    doubt = viewer.layers[f"synthetic doubt ({label})"]
    assert mask.name == f"synthetic LA ({label})"
    assert doubt.colormap.name == "la_doubt" and doubt.blending == "translucent"
    assert doubt.data.shape == mask.data.shape == image.data.shape
    for attribute in ("scale", "translate"):
        assert np.allclose(getattr(doubt, attribute), getattr(image, attribute))
    assert np.allclose(doubt.affine.affine_matrix, image.affine.affine_matrix)
    assert np.array_equal(mask.metadata[PREDICTION_KEY], mask_of(mask, image))

    # The mask is the plain prediction's, bit for bit.
    plain = _segment(viewer, qtbot, widget, image, two_view_checkpoint, doubt="off")
    assert plain.name == f"synthetic LA ({label}) (2)"
    assert np.array_equal(plain.data, mask.data)
    assert len([layer for layer in viewer.layers if "doubt" in layer.name]) == 1

    # Next / previous move the slider to the doubtful slices, most doubtful first.
    nav = widget.navigator
    assert nav.slices and nav.next.enabled
    # ranked by the doubt near the mask's surface, as doubt.rank_slices does with the mask (in
    # the file's voxel order, where the navigator's slice axis is)
    in_file = rank_slices(mask_of(doubt, image), nav.slice_axis, mask=mask_of(mask, image))
    expected = in_file[:DOUBT_SLICES]
    assert nav.slices == expected
    for position, file_slice in enumerate(nav.slices[:3]):
        shown = nav.go_next()
        step = viewer.dims.current_step[viewer.dims.not_displayed[0]]
        assert shown == step
        point = np.zeros((1, 3))
        point[0, viewer.dims.not_displayed[0]] = step
        assert round(layer_to_file_index(image, point)[0, nav.slice_axis]) == file_slice
        assert nav.where.value == f"slice {step}, {position + 1} of {len(nav.slices)} doubtful"
    nav.go_previous()
    assert nav.where.value.endswith(f"2 of {len(nav.slices)} doubtful")
    keys = {str(key).replace("+", "-"): action for key, action in viewer.keymap.items()}
    keys[NEXT_KEY](viewer)  # the keyboard shortcuts do the same
    assert nav.where.value.endswith(f"3 of {len(nav.slices)} doubtful")
    keys[PREVIOUS_KEY](viewer)
    assert nav.where.value.endswith(f"2 of {len(nav.slices)} doubtful")


def test_every_end_state_writes_its_status(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, add_case, tmp_path
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    threads = torch.get_num_threads()
    _segment(viewer, qtbot, widget, image, tiny_checkpoint, doubt="off")
    assert widget.status.value.startswith("done:")
    assert torch.get_num_threads() == threads  # the job's one-fewer threads are given back
    # A bad input after a success: the old "done" must not stay.
    widget.select_model(str(tmp_path / "missing"))
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert widget.status.value.startswith("failed:")
    widget.roi.value = viewer.add_shapes([[[0, 0], [0, 9], [9, 9], [9, 0]]], name="box")
    widget.centre.value = viewer.add_points([[1, 5, 5]], name="click")
    assert widget.run() is None and widget.status.value.startswith("not started: choose an ROI")
    widget.roi.value = widget.centre.value = None
    widget.select_model(str(tiny_checkpoint))
    widget.batch_size.value = 1
    job = widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert widget.status.value == "cancelled: no mask added"
