"""Fine-tune widget end to end: corrected mask -> checkpoint -> model lists -> re-segment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets.finetune import FinetuneWidget
from napari_la_dinov2._widgets.segment import SegmentWidget

pytestmark = pytest.mark.gui


def test_finetune_from_layers_then_resegment(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, add_case, tmp_path
):
    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    segment = SegmentWidget(viewer)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.picker.image.value, widget.picker.mask.value = image, mask
    widget.picker.add_pair()
    assert widget.picker.cases.choices == (0,)
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget.model.value = str(tiny_checkpoint)
    widget.quick.value = False  # the epochs below, not the quick round
    widget.epochs.value, widget.batch_size.value = 2, 4
    widget.output.value = str(tmp_path / "run")
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is None, job.error
    result = widget.result
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["epochs"] == 2
    # The live plot received every step and every epoch.
    assert len(widget.plot.dices) == 2 and len(widget.plot.losses) >= 2
    assert np.isfinite(widget.plot.losses).all()
    # The new checkpoint is offered by Segment, and one click re-segments with it.
    best = str(result.best_checkpoint)
    assert best in segment.model.choices
    assert widget.resegment.enabled
    n_layers = len(viewer.layers)
    seg_job = widget.segment_with_result()
    qtbot.waitUntil(lambda: seg_job.finished, timeout=60_000)
    assert len(viewer.layers) == n_layers + 1
    assert viewer.layers[-1].data.shape == image.data.shape
    assert "run/best" in viewer.layers[-1].name


def test_finetune_cancel_keeps_best_checkpoint(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, add_case, tmp_path
):
    viewer = make_napari_viewer()
    image, mask = add_case(viewer, small_case)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.picker.image.value, widget.picker.mask.value = image, mask
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget.model.value = str(tiny_checkpoint)
    widget.quick.value = False  # the epochs below, not the quick round
    widget.epochs.value, widget.batch_size.value = 50, 2
    widget.output.value = str(tmp_path / "run")
    job = widget.run()
    # Cancel once the first epoch is validated: the run stops and keeps that checkpoint.
    qtbot.waitUntil(lambda: len(widget.plot.dices) >= 1, timeout=120_000)
    widget.cancel()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is None
    assert widget.result.stopped
    assert len(widget.result.history) < 50
    # The status says what was kept, not the last step's progress.
    assert widget.status.value.startswith("stopped at epoch") and "kept" in widget.status.value
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
