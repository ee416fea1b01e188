"""Layer pickers follow the viewer's layer list; the model list starts fresh in every test."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets.compare import CompareWidget
from napari_la_dinov2._widgets.finetune import FinetuneWidget
from napari_la_dinov2._widgets.segment import SegmentWidget
from napari_la_dinov2._widgets.surface import SurfaceWidget

pytestmark = pytest.mark.gui


def _pickers(viewer):
    """(widget class, picker getter, layer kind) for every layer picker of every widget."""
    segment, finetune = SegmentWidget(viewer), FinetuneWidget(viewer)
    compare, surface = CompareWidget(viewer), SurfaceWidget(viewer)
    for widget, name in ((segment, "Segment"), (finetune, "Fine-tune"), (compare, "Compare")):
        viewer.window.add_dock_widget(widget, name=name)
    viewer.window.add_dock_widget(surface, name="Surface")
    return {
        "image": [segment.image, finetune.picker.image, compare.image, surface.image],
        "labels": [finetune.picker.mask, compare.reference, surface.mask],
        "shapes": [segment.roi],
    }


def test_pickers_follow_added_renamed_and_removed_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    pickers = _pickers(viewer)
    assert all(len([c for c in p.choices if c is not None]) == 0 for p in pickers["image"])

    image = viewer.add_image(np.zeros((4, 16, 16), np.float32), name="scan")
    labels = viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="mask")
    shapes = viewer.add_shapes([[[0, 0], [0, 5], [5, 5], [5, 0]]], name="box")
    for kind, layer in (("image", image), ("labels", labels), ("shapes", shapes)):
        for picker in pickers[kind]:
            assert layer in picker.choices, (kind, picker.label)
    # Only the right kind: no Labels layer offered as an image, and so on.
    assert all(labels not in p.choices for p in pickers["image"])
    assert all(image not in p.choices for p in pickers["labels"])

    image.name = "scan renamed"
    assert "scan renamed" in pickers["image"][0].native.itemText(0)

    viewer.layers.remove(image)
    viewer.layers.remove(shapes)
    for picker in pickers["image"] + pickers["shapes"]:
        assert image not in picker.choices and shapes not in picker.choices
    assert all(labels in p.choices for p in pickers["labels"])


def test_a_checkpoint_added_in_a_test(tiny_checkpoint, make_napari_viewer):
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget = SegmentWidget(make_napari_viewer())
    assert str(tiny_checkpoint) in widget.model.choices


def test_is_absent_in_the_next(tiny_checkpoint, make_napari_viewer):
    # Runs after the test above (file order): the autouse fixture reset the shared list.
    assert str(tiny_checkpoint) not in dict(KNOWN_MODELS.choices()).values()
    widget = SegmentWidget(make_napari_viewer())
    assert str(tiny_checkpoint) not in widget.model.choices
