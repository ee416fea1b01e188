"""The main job with a display: open a volume, dock the four widgets, segment it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2 import write_labels
from napari_la_dinov2.launch import WIDGETS, launch

pytestmark = pytest.mark.gui


def test_launch_opens_docks_and_segments(
    make_napari_viewer, qtbot, small_case, tiny_checkpoint, tmp_path
):
    name, image, _, meta = small_case
    path = tmp_path / f"{name}.nii.gz"
    write_labels(path, image.astype(np.uint8), meta)  # uint8 like the LA 2018 images
    viewer = make_napari_viewer()
    viewer, widgets, job = launch(str(path), model=str(tiny_checkpoint), viewer=viewer, block=False)
    assert set(widgets) == set(WIDGETS) and {"Surface", "Correct"} <= set(WIDGETS)
    # The docks (given napari's proxy of the viewer) stop their jobs when the window closes.
    assert viewer.window._qt_window._la_dinov2_close_watcher is not None
    # The reader shows the slice axis (z, the coarse one) first, on the slider, in napari's
    # default order; the canvas shows x across and y down (LA 2018 is LPS: the axial view).
    assert viewer.dims.order == (0, 1, 2)
    assert viewer.layers[0].data.shape == image.shape[::-1]
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    labels = widgets["Segment"].last_layer
    assert labels in viewer.layers and labels.data.shape == image.shape[::-1]
    assert np.allclose(labels.scale, meta.spacing[::-1])
