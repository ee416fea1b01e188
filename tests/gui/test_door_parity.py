"""The command line and the Segment dock are two doors into one engine: for the same volume,
region (a box or a centre) and settings they give the same labels, measures and warnings.
The model is the all-atrium one, whose mask is the region segmented, so that the region and its
border warning are what is compared."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2._layer_geometry import file_to_layer_index, layer_volume
from napari_la_dinov2._widgets.segment import SegmentWidget
from napari_la_dinov2.cli import main
from napari_la_dinov2.cli.mesh import measure_lines

pytestmark = pytest.mark.gui
BOX = (10, 54, 8, 50)  # rows, columns of the synthetic case's 64 x 56 slices (all 12 slices)
CENTER = (30, 28, 6)
THRESHOLD = 0.45


def _dock_region(viewer, image, region: str):
    """The ROI rectangle (drawn on slice 2) or the centre click, in world coordinates."""
    if region == "box":
        r0, r1, c0, c1 = BOX
        corners = np.array([[r0, c0, 2], [r0, c1 - 1, 2], [r1 - 1, c1 - 1, 2], [r1 - 1, c0, 2]])
        world = [image.data_to_world(c) for c in file_to_layer_index(image, corners.astype(float))]
        return "roi", viewer.add_shapes([np.array(world)], shape_type="rectangle", name="box")
    click = image.data_to_world(file_to_layer_index(image, np.array([CENTER], float))[0])
    return "centre", viewer.add_points([click], name="atrium")


def _cli_region(region: str) -> list[str]:
    if region == "box":
        return ["--roi", "{}:{},{}:{}".format(*BOX)]
    return ["--center", ",".join(map(str, CENTER))]


def _segment_in_the_dock(viewer, qtbot, image, region, checkpoint, notifications):
    """The Segment dock's labels (in the file's voxel order), the dock itself and the
    warnings it showed about its mask."""
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    picker, layer = _dock_region(viewer, image, region)
    getattr(widget, picker).value = layer
    widget.image.value = image
    widget.select_model(str(checkpoint))
    widget.threshold.value, widget.precision.value = THRESHOLD, "fp32"
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None
    dock_labels, _ = layer_volume(widget.last_layer)
    prefix = f"'{widget.last_layer.name}': "
    warnings = [w.removeprefix(prefix) for w in notifications["warning"] if w.startswith(prefix)]
    return widget, dock_labels, warnings


def _segment_on_the_command_line(small_case, region, checkpoint, tmp_path, capsys):
    """``la-dinov2 segment`` on the same volume, region and settings: its labels, the
    warnings on stderr and what it printed on stdout."""
    _, volume, _, meta = small_case
    source, out = tmp_path / "case.nii.gz", tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(volume, meta.affine), str(source))
    capsys.readouterr()
    argv = ["segment", str(source), "--out", str(out), "--checkpoint", str(checkpoint)]
    argv += ["--threshold", str(THRESHOLD), "--precision", "fp32", *_cli_region(region)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    warnings = [
        line.removeprefix("warning: ")
        for line in printed.err.splitlines()
        if line.startswith("warning: ")
    ]
    return np.asanyarray(nib.load(str(out)).dataobj), warnings, printed.out


@pytest.mark.parametrize("region", ["box", "centre"])
def test_the_command_line_and_the_dock_agree(
    region,
    make_napari_viewer,
    qtbot,
    small_case,
    foreground_checkpoint,
    add_case,
    notifications,
    tmp_path,
    capsys,
):
    viewer = make_napari_viewer()
    image, _ = add_case(viewer, small_case)
    widget, dock_labels, dock_warnings = _segment_in_the_dock(
        viewer, qtbot, image, region, foreground_checkpoint, notifications
    )
    cli_labels, cli_warnings, printed_out = _segment_on_the_command_line(
        small_case, region, foreground_checkpoint, tmp_path, capsys
    )
    # The model's own warning (untrained heads) comes first, then the mask's.
    assert "no trained segmentation weights" in cli_warnings[0]
    assert cli_warnings[0] in notifications["warning"]
    cli_warnings = cli_warnings[1:]

    assert dock_labels.any()
    np.testing.assert_array_equal(dock_labels, cli_labels)
    assert widget.last_measures is not None
    assert "\n".join(measure_lines(widget.last_measures)) in printed_out
    # The all-atrium model fills the region: the border warning speaks of it through either
    # door (the dock once spoke of the whole volume after a centre click).
    assert any("border of the segmented region" in w for w in cli_warnings)
    assert dock_warnings == cli_warnings
