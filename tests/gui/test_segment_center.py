"""The Segment widget's Centre (Points) picker: one click gives the region `--center` gives."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2._layer_geometry import file_to_layer_index, layer_volume
from napari_la_dinov2._widgets.segment import SegmentWidget
from napari_la_dinov2.cli import main
from napari_la_dinov2.inference import RegionOfInterest
from napari_la_dinov2.models import load_model, save_checkpoint

pytestmark = pytest.mark.gui
# Small enough to be a strict part of the 6-slice case in every direction (at 0.625 x 0.625 x
# 1.25 mm: 64 x 48 voxels, 4 slices), so the test sees where the region is, not the whole volume.
FIELD_OF_VIEW_MM = [40.0, 30.0, 5.0]


@pytest.fixture
def framed_checkpoint(foreground_checkpoint, tmp_path):
    """The all-atrium model with a recorded training field of view: its mask is the region."""
    model = load_model(str(foreground_checkpoint))
    model.provenance["training_grid"] = {
        "spacing_mm": [0.625, 0.625, 1.25],
        "field_of_view_mm": FIELD_OF_VIEW_MM,
        "cases": 1,
    }
    return save_checkpoint(model, tmp_path / "framed")


@pytest.mark.parametrize("center", [(40, 30, 6), (2, 55, 0)])  # inside; at two edges
def test_a_click_gives_the_region_of_center(
    center, make_napari_viewer, qtbot, small_case, framed_checkpoint, add_case, tmp_path
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)  # shown in the acquisition plane, in mm
    _, volume, _, meta = small_case
    click = image.data_to_world(file_to_layer_index(image, np.array([center], float))[0])
    points = viewer.add_points([click], name="atrium")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.image.value, widget.centre.value = image, points
    widget.select_model(str(framed_checkpoint))
    widget.morphology.value = widget.largest_cc.value = False
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None
    clicked, _ = layer_volume(widget.last_layer)  # back in the file's voxel order

    source, out = tmp_path / "case.nii.gz", tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(volume, meta.affine), str(source))
    argv = [
        "segment",
        source,
        "--out",
        out,
        "--checkpoint",
        framed_checkpoint,
        "--center",
        ",".join(map(str, center)),
        "--no-morphology",
        "--no-largest-cc",
    ]
    assert main([str(a) for a in argv]) == 0
    np.testing.assert_array_equal(clicked, np.asanyarray(nib.load(str(out)).dataobj))

    expected = np.zeros(volume.shape, np.uint8)
    expected[RegionOfInterest.around(center, meta, FIELD_OF_VIEW_MM).clamp(volume.shape, 2)] = 1
    np.testing.assert_array_equal(clicked, expected)
    assert 0 < expected.sum() < expected.size  # a strict part of the volume
