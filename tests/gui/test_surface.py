"""Surface widget: the mesh of a real mask, placed on the mask in napari's world, and exported."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.ndimage import binary_erosion
from scipy.spatial import cKDTree

from napari_la_dinov2._layer_geometry import mask_of
from napari_la_dinov2._widgets.surface import SurfaceWidget
from napari_la_dinov2.mesh import mesh_from_mask

pytestmark = [pytest.mark.gui, pytest.mark.real_data]


def _dock(viewer, image, mask):
    widget = SurfaceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Surface")
    widget.image.value, widget.mask.value = image, mask
    return widget


def _boundary_world(labels_layer) -> np.ndarray:
    """World coordinates of the mask's boundary voxels (foreground with a background
    neighbour), each through napari's own data_to_world of the Labels layer."""
    data = labels_layer.data != 0
    boundary = np.argwhere(data & ~binary_erosion(data, border_value=0))
    return np.array([labels_layer.data_to_world(index) for index in boundary])


def test_surface_sits_on_the_mask_in_world_coordinates(
    make_napari_viewer, qtbot, real_case, add_case
):
    # A real atrium is asymmetric: a mirrored or transposed surface (LPS taken for RAS, the
    # display reorder forgotten) would lie millimetres away from its boundary.
    viewer = make_napari_viewer()
    image, mask = add_case(viewer, real_case)
    widget = _dock(viewer, image, mask)
    job = widget.show_surface()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    surface = widget.surface_layer
    assert surface in viewer.layers and viewer.dims.ndisplay == 3
    # World = layer data times one isotropic scale (see SurfaceOnImageGrid).
    vertices = np.asarray(surface.data[0]) * np.asarray(surface.scale)
    assert np.allclose(surface.data_to_world(surface.data[0][0]), vertices[0])
    assert np.ptp(np.asarray(surface.scale)) == 0
    distances, _ = cKDTree(_boundary_world(mask)).query(vertices)
    spacing = np.asarray(image.scale)  # mm per display axis
    # Marching cubes puts a vertex half a voxel from a boundary voxel centre; the smoothing
    # moves it a little more. A mirrored surface misses by many mm.
    assert np.median(distances) < 0.5 * spacing.max()
    assert np.percentile(distances, 99) < 1.2 * spacing.max()
    # The whole boundary is covered, not only a part of it.
    back, _ = cKDTree(vertices).query(_boundary_world(mask))
    assert np.percentile(back, 99) < 1.2 * spacing.max()


def test_export_writes_the_mesh_in_lps(make_napari_viewer, qtbot, real_case, add_case, tmp_path):
    viewer = make_napari_viewer()
    image, mask = add_case(viewer, real_case)
    widget = _dock(viewer, image, mask)
    widget.path.value = str(tmp_path / "la.stl")
    job = widget.export()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.error is None, job.error
    written = trimesh.load(tmp_path / "la.stl")
    _, _, _, meta = real_case
    expected = mesh_from_mask(mask_of(mask, image), meta)  # LPS by default
    assert np.allclose(written.bounds, expected.bounds, atol=1e-3)
    assert written.volume == pytest.approx(expected.volume, rel=1e-4)
    # An existing file is refused without "Replace": one sentence, nothing written.
    assert widget.export() is None
