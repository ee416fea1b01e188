"""What a new user tripped over (issue 22), each checked as a user meets it under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2._layer_geometry import labels_layer_kwargs
from napari_la_dinov2._widgets._doubt import add_doubt_layer, is_doubt_layer
from napari_la_dinov2._widgets.surface import SurfaceWidget

pytestmark = pytest.mark.gui
# A guard against a hung job, not a timing: the shared 2-core machine can be very slow.
WAIT_MS = 300_000


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
    other = viewer.add_labels(mask.data.copy(), **labels_layer_kwargs(image_layer, "another"))
    doubt = add_doubt_layer(viewer, image_layer, labels.astype(np.float32) * 0.3, "doubt")
    assert is_doubt_layer(doubt) and not is_doubt_layer(other)
    viewer.dims.set_current_step(0, 7)
    before, _ = _sliders(viewer)
    assert before[0] == (labels.shape[2], pytest.approx(1.25))  # 12 steps of 1.25 mm

    widget = SurfaceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Surface")
    widget.image.value, widget.mask.value = image_layer, mask
    job = widget.show_surface()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
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


def test_the_demo_opens_on_segment_with_the_whole_slice_in_view(
    make_napari_viewer, qtbot, small_case, tmp_path
):
    from napari_la_dinov2 import write_labels
    from napari_la_dinov2.launch import launch

    name, image, _, meta = small_case
    path = tmp_path / f"{name}.nii.gz"
    write_labels(path, image.astype(np.uint8), meta)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer, widgets, _ = launch(str(path), viewer=viewer, segment=False, block=False)
    # A dock in a tab behind another is "visible" to Qt but has no visible region.
    shown = [name for name, widget in widgets.items() if widget.native.isVisible()]
    in_front = [name for name in shown if not widgets[name].native.visibleRegion().isEmpty()]
    assert "Segment" in shown and in_front == ["Segment"], in_front
    # The slice was fitted to the canvas as it is once the docks took their width: fitting
    # again now changes nothing, and the whole slice is inside the canvas.
    zoom, center = viewer.camera.zoom, tuple(viewer.camera.center)
    qtbot.wait(50)
    viewer.reset_view()
    assert viewer.camera.zoom == pytest.approx(zoom) and np.allclose(viewer.camera.center, center)
    layer = viewer.layers[0]
    size_mm = (np.array(layer.data.shape[1:]) - 1) * np.asarray(layer.scale[1:])
    canvas = np.asarray(viewer.window._qt_viewer.canvas.size)  # (height, width)
    assert np.all(size_mm * zoom <= canvas + 1), (size_mm * zoom, canvas)


def test_a_new_checkpoint_comes_right_after_the_default_and_registry_names_say_untrained(
    make_napari_viewer, tiny_checkpoint, tmp_path
):
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.compare import CompareWidget
    from napari_la_dinov2._widgets.fewshot import FewShotWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    widgets = [SegmentWidget(viewer), CompareWidget(viewer), FewShotWidget(viewer)]
    run = tmp_path / "finetune-20261203-071939" / "best"  # as the Fine-tune dock names a run
    run.mkdir(parents=True)
    KNOWN_MODELS.add(str(tiny_checkpoint))
    label = KNOWN_MODELS.add(str(run))  # the newest
    assert label == "finetune 07:19:39"  # short: what tells two runs apart stays in sight
    for widget in widgets:
        native = widget.model.native if hasattr(widget, "model") else widget.models.native
        texts = [
            native.itemText(i) if hasattr(native, "itemText") else native.item(i).text()
            for i in range(native.count())
        ]
        assert texts[:3] == ["default", label, KNOWN_MODELS.label_of(str(tiny_checkpoint))]
        assert all(t.endswith(" (untrained)") for t in texts[3:]), texts
    # A choice keeps its value when the list is reordered under it.
    assert widgets[0].model.value == "default"


def test_masks_get_colours_of_their_own_and_compare_adds_no_duplicate_names(
    make_napari_viewer, qtbot, small_case, add_case, tiny_checkpoint, foreground_checkpoint
):
    from napari_la_dinov2._widgets._colours import DISAGREE_COLOUR, label_one_colour
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.compare import CompareWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    image, expert = add_case(viewer, small_case)
    segment = SegmentWidget(viewer)
    segment.image.value = image
    segment.select_model(str(tiny_checkpoint))
    job = segment.run()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    compare = CompareWidget(viewer)
    compare.image.value, compare.reference.value = image, expert
    KNOWN_MODELS.add(str(foreground_checkpoint))
    compare.models.value = [str(tiny_checkpoint), str(foreground_checkpoint)]
    job = compare.run()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    assert job.error is None, job.error
    masks = [expert, segment.last_layer, *compare.model_layers]
    colours = [label_one_colour(layer) for layer in masks]
    assert len(set(colours)) == len(masks), colours  # four masks, four colours
    assert DISAGREE_COLOUR not in colours
    names = [layer.name for layer in viewer.layers]
    assert len(set(names)) == len(names) and not any("#" in name for name in names), names


def test_messages_say_what_to_do_in_the_docks_not_which_flag_to_pass(
    make_napari_viewer, qtbot, small_case, add_case, tmp_path, notifications, monkeypatch
):
    import huggingface_hub.constants as constants

    from napari_la_dinov2._widgets.finetune import FinetuneWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    finetune = FinetuneWidget(viewer)
    finetune.picker.image.value, finetune.picker.mask.value = image, mask
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # a folder that holds a run
    finetune.output.value = str(tmp_path / "run")
    assert finetune.run() is None
    assert "--" not in finetune.status.value and "another 'Output folder'" in finetune.status.value

    # An untrained DINOv2 head whose backbone is not cached, offline: the whole sentence, wrapped.
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    segment = SegmentWidget(viewer)
    segment.image.value, segment.model.value = image, "dinov2_vits14"
    job = segment.run()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    status = segment.status.value
    assert status.startswith("failed: the DINOv2 weights") and status.endswith(").")
    assert "--" not in status and segment.status.native.wordWrap()
    assert notifications["error"] and all("--" not in m for m in notifications["error"])


def test_the_doubt_leaves_the_wall_visible_and_goes_stale_when_the_mask_is_edited(
    make_napari_viewer, small_case, add_case
):
    from napari_la_dinov2._widgets._colours import DISAGREE_COLOUR
    from napari_la_dinov2._widgets._doubt import STALE_SUFFIX, mark_stale_on_edit

    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    doubt_values = np.zeros(small_case[1].shape, np.float32)
    doubt_values[10:20] = 0.4
    doubt = add_doubt_layer(viewer, image, doubt_values, "synthetic doubt")
    mark_stale_on_edit(mask, doubt)
    # The strongest doubt is a see-through tint (the wall shows through), never white, and far
    # from Compare's magenta.
    top = doubt.colormap.map(np.array([1.0]))[0]
    assert doubt.blending == "translucent" and top[3] <= 0.6
    assert not np.allclose(top[:3], 1.0)
    magenta = np.array([int(DISAGREE_COLOUR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    assert np.abs(top[:3] - magenta).max() >= 0.8
    assert doubt.colormap.map(np.array([0.0]))[0][3] == 0.0  # no doubt: nothing drawn
    # A brush stroke on the mask: the doubt is marked as describing the mask before it.
    opacity = doubt.opacity
    mask.paint((3, 20, 20), 1, refresh=True)
    assert doubt.name.endswith(STALE_SUFFIX) and doubt.opacity < opacity
    mask.paint((4, 20, 20), 1, refresh=True)
    assert doubt.name.count(STALE_SUFFIX) == 1


def _after_each_event(widget, then) -> None:
    """Run ``then(event)`` after the dock's own handling of each engine event."""
    handle = widget._on_event

    def on_event(event):
        handle(event)
        then(event)

    widget._on_event = on_event


def _finetune_dock(viewer, image, mask, checkpoint, output, epochs):
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.finetune import FinetuneWidget

    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.picker.image.value, widget.picker.mask.value = image, mask
    KNOWN_MODELS.add(str(checkpoint))
    widget.model.value = str(checkpoint)
    widget.quick.value = False
    widget.epochs.value, widget.batch_size.value = epochs, 4
    widget.output.value = str(output)
    return widget


def test_segment_with_it_shows_progress_and_measures_and_validation_is_named(
    make_napari_viewer, qtbot, small_case, add_case, tiny_checkpoint, tmp_path, monkeypatch
):
    from napari_la_dinov2.training.events import StepDone

    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    widget = _finetune_dock(viewer, image, mask, tiny_checkpoint, tmp_path / "run", epochs=1)
    lines = []

    def at_validation(event):
        if isinstance(event, StepDone) and event.step == event.steps:
            lines.append(widget.status.value)

    _after_each_event(widget, at_validation)
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    assert job.error is None, job.error
    assert lines and "validating" in lines[-1] and "0 s left" not in lines[-1], lines
    import napari_la_dinov2._widgets.finetune as finetune_module

    seen, text_of = [], finetune_module.progress_text

    def recorded(label, event):  # what the status line is given, event by event
        seen.append(text_of(label, event))
        return seen[-1]

    monkeypatch.setattr(finetune_module, "progress_text", recorded)
    job = widget.segment_with_result()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    assert job.error is None, job.error
    assert any(line and "% (" in line and "2D slices" in line for line in seen), seen
    assert "mL" in widget.status.value or "empty mask" in widget.status.value


def test_closing_the_viewer_during_a_fine_tune_stops_the_engine_and_keeps_the_best(
    make_napari_viewer, qtbot, small_case, add_case, tiny_checkpoint, tmp_path
):
    import time

    from napari_la_dinov2.models import load_model
    from napari_la_dinov2.training.events import EpochDone

    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    widget = _finetune_dock(viewer, image, mask, tiny_checkpoint, tmp_path / "run", epochs=50)
    epochs = []
    _after_each_event(widget, lambda event: isinstance(event, EpochDone) and epochs.append(event))
    job = widget.run()
    qtbot.waitUntil(lambda: bool(epochs), timeout=WAIT_MS)  # a best checkpoint exists
    from qtpy.QtCore import QEvent

    # The window's Close event, as the viewer's close button sends it, through the watcher the
    # docks installed (napari's own teardown of the window is left to the test fixture).
    window = viewer.window._qt_window
    started = time.perf_counter()
    window._la_dinov2_close_watcher.eventFilter(window, QEvent(QEvent.Type.Close))
    assert job.engine_done.wait(20.0), "the engine still ran 20 s after the viewer closed"
    stopped_s = time.perf_counter() - started
    print(f"engine stopped {stopped_s:.2f} s after the viewer closed (machine shared)")
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    assert widget.result is not None and widget.result.stopped  # stopped, the best kept
    best = tmp_path / "run" / "best"
    assert load_model(str(best)).model_name == "unet"  # intact: loads through the engine
