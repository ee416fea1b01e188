"""LA measures (measures.py) against the analytic volume, area, diameters and sphericity of
ellipsoids voxelised in an oblique grid, the plausibility warnings, and one expert mask."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import ellipeinc, ellipkinc

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.measures import (
    LAMeasures,
    feret_diameter,
    la_measures,
    plausibility_warnings,
)
from napari_la_dinov2.mesh import mesh_from_mask
from napari_la_dinov2.scoring.metrics import la_volume_ml
from napari_la_dinov2.volume_files import VolumeMeta, read_labels_with_meta
from tests.test_mesh import ELLIPSOID_AXES, ellipsoid_mask, oblique_meta

SEMI_AXES = (30.0, 20.0, 15.0)


def ellipsoid_area(a: float, b: float, c: float) -> float:
    """Exact surface area (mm2) of an ellipsoid with semi-axes a >= b > c (Legendre's form)."""
    phi = math.acos(c / a)
    m = a * a * (b * b - c * c) / (b * b * (a * a - c * c))
    elliptic = ellipeinc(phi, m) * math.sin(phi) ** 2 + ellipkinc(phi, m) * math.cos(phi) ** 2
    return 2 * math.pi * c * c + 2 * math.pi * a * b / math.sin(phi) * elliptic


def analytic_sphericity(volume: float, area: float) -> float:
    return math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area


@pytest.fixture(scope="module")
def oblique():
    meta = oblique_meta()
    mask = ellipsoid_mask(meta, SEMI_AXES)
    return mask, meta, la_measures(mask, meta)


def test_volume_is_metrics_la_volume_ml_and_close_to_the_mesh(oblique):
    mask, meta, measures = oblique
    assert measures.volume_ml == la_volume_ml(mask, meta.spacing)
    assert measures.volume_ml == pytest.approx(
        4 / 3 * math.pi * math.prod(SEMI_AXES) / 1e3, rel=0.01
    )
    assert measures.mesh_volume_ml == pytest.approx(measures.volume_ml, rel=0.03)


def test_surface_area_is_the_smooth_surface_not_voxel_faces(oblique):
    _, _, measures = oblique
    # Voxel faces of this oblique ellipsoid over-estimate the area by 49%, unsmoothed marching
    # cubes by 13%, the smoothed mesh by 2%.
    assert measures.surface_area_cm2 == pytest.approx(ellipsoid_area(*SEMI_AXES) / 100, rel=0.04)


def test_diameters_match_the_analytic_ones_within_a_voxel(oblique):
    _, meta, measures = oblique
    voxel = max(meta.spacing)
    assert measures.max_diameter_mm == pytest.approx(2 * SEMI_AXES[0], abs=voxel)
    np.testing.assert_allclose(
        measures.principal_diameters_mm, np.multiply(2, SEMI_AXES), atol=voxel
    )
    # The Feret diameter is the largest extent in any direction.
    assert measures.max_diameter_mm >= max(measures.principal_diameters_mm)


def test_principal_axes_are_the_ellipsoid_axes_in_lps(oblique):
    _, _, measures = oblique
    assert measures.coordinate_system == "LPS"
    expected = (ELLIPSOID_AXES * np.array([-1, -1, 1])[:, None]).T  # rows, RAS -> LPS
    dots = np.abs(np.einsum("ij,ij->i", np.asarray(measures.principal_axes), expected))
    assert (dots > 0.99).all()


def test_principal_axes_follow_a_ras_mesh(oblique):
    mask, meta, measures = oblique
    ras = la_measures(mask, meta, mesh_from_mask(mask, meta, ras=True))
    assert ras.coordinate_system == "RAS"
    np.testing.assert_allclose(
        np.abs(np.asarray(ras.principal_axes) * [-1, -1, 1]), np.abs(measures.principal_axes)
    )
    assert ras.as_row() == pytest.approx(measures.as_row())


@pytest.mark.parametrize(
    "semi_axes, low, high", [((20.0, 20.0, 20.0), 0.95, 1.0), ((40.0, 12.0, 12.0), 0.0, 0.9)]
)
def test_sphericity_near_one_for_a_sphere_and_low_when_elongated(semi_axes, low, high):
    meta = oblique_meta()
    mask = ellipsoid_mask(meta, semi_axes)
    measures = la_measures(mask, meta)
    a, b, c = semi_axes
    if a == c:
        expected = 1.0
    else:  # prolate spheroid, c = b < a
        e = math.sqrt(1 - (b / a) ** 2)
        area = 2 * math.pi * b * b * (1 + a / (b * e) * math.asin(e))
        expected = analytic_sphericity(4 / 3 * math.pi * a * b * c, area)
    assert low < measures.sphericity <= high
    assert measures.sphericity == pytest.approx(expected, abs=0.03)


def test_feret_diameter_of_a_cube_is_its_space_diagonal():
    corners = np.array(np.meshgrid([0, 2], [0, 2], [0, 2], indexing="ij")).reshape(3, -1).T
    inside = np.random.default_rng(0).random((500, 3)) * 2
    assert feret_diameter(np.vstack([inside, corners])) == pytest.approx(2 * math.sqrt(3))


def test_feret_diameter_of_flat_or_few_points():
    assert feret_diameter(np.array([[0.0, 0, 0], [3, 4, 0], [1, 1, 0], [2, 0, 0]])) == 5.0
    assert feret_diameter(np.array([[1.0, 2, 3]])) == 0.0


def test_an_empty_mask_has_no_measures():
    meta = VolumeMeta.from_spacing((10, 10, 10))
    with pytest.raises(InputError, match="empty"):
        la_measures(np.zeros(meta.shape), meta)


def test_measures_are_frozen_and_give_a_flat_row(oblique):
    _, _, measures = oblique
    with pytest.raises(dataclasses.FrozenInstanceError):
        measures.volume_ml = 0.0
    row = measures.as_row()
    assert list(row) == [
        "volume_ml",
        "mesh_volume_ml",
        "surface_area_cm2",
        "sphericity",
        "max_diameter_mm",
        "diameter_major_mm",
        "diameter_middle_mm",
        "diameter_minor_mm",
    ]
    assert all(isinstance(value, float) for value in row.values())
    assert row["diameter_major_mm"] == measures.principal_diameters_mm[0]
    assert isinstance(measures, LAMeasures)


# --- plausibility ---


def test_a_plausible_mask_gives_no_warning(oblique):
    mask, meta, measures = oblique
    assert plausibility_warnings(mask, meta, measures) == []
    assert plausibility_warnings(mask, meta) == []


def test_an_empty_mask_is_one_warning_not_an_exception():
    meta = VolumeMeta.from_spacing((20, 20, 10))
    (warning,) = plausibility_warnings(np.zeros(meta.shape), meta)
    assert "empty" in warning


def test_a_mask_touching_the_volume_border_is_warned():
    meta = VolumeMeta.from_spacing((60, 60, 40), (1.0, 1.0, 1.0))
    mask = np.zeros(meta.shape, np.uint8)
    mask[10:50, 10:50, 20:40] = 1  # 32 mL, reaching the end of axis 2
    (warning,) = plausibility_warnings(mask, meta)
    assert "border" in warning and "axis 2 end (S)" in warning and "axis 0" not in warning


def test_a_mask_touching_the_segmented_region_border_is_warned():
    meta = VolumeMeta.from_spacing((60, 60, 40), (1.0, 1.0, 1.0))
    mask = np.zeros(meta.shape, np.uint8)
    mask[10:50, 10:50, 10:30] = 1  # 32 mL, inside the volume
    assert plausibility_warnings(mask, meta) == []
    (warning,) = plausibility_warnings(mask, meta, region=(slice(10, 55), slice(5, 55)))
    assert "segmented region" in warning and "axis 0 start (L)" in warning
    assert plausibility_warnings(mask, meta, region=(slice(5, 55), slice(5, 55))) == []


def test_a_5_ml_mask_is_warned_about_its_volume():
    meta = oblique_meta()
    radius = (5000 * 3 / (4 * math.pi)) ** (1 / 3)  # a 5 mL sphere
    mask = ellipsoid_mask(meta, (radius, radius, radius))
    measures = la_measures(mask, meta)
    assert measures.volume_ml == pytest.approx(5.0, rel=0.05)
    (warning,) = plausibility_warnings(mask, meta, measures)
    assert "20-400 mL" in warning and f"{measures.volume_ml:.1f} mL" in warning


def test_a_mask_in_several_parts_is_warned_that_the_mesh_holds_only_one():
    meta = oblique_meta()
    big = ellipsoid_mask(meta, (25.0, 20.0, 15.0))
    island = ellipsoid_mask(meta, (10.0, 10.0, 6.0), centre=[-100.0, 40.0, 45.0])
    assert not (big & island).any()
    (warning,) = plausibility_warnings(big | island, meta, la_measures(big | island, meta))
    assert "several separate parts" in warning
    assert plausibility_warnings(big, meta, la_measures(big, meta)) == []


@pytest.mark.realdata
def test_an_expert_mask_gives_a_closed_mesh_and_plausible_measures(real_data_dir, real_case_ids):
    labels, meta = read_labels_with_meta(real_data_dir / "labels" / f"{real_case_ids[0]}.nii.gz")
    mesh = mesh_from_mask(labels, meta)
    measures = la_measures(labels, meta, mesh)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert measures.mesh_volume_ml == pytest.approx(measures.volume_ml, rel=0.03)
    assert 20 <= measures.volume_ml <= 400
    assert 0.4 < measures.sphericity < 0.95
    assert 30 < min(measures.principal_diameters_mm)
    assert max(measures.principal_diameters_mm) <= measures.max_diameter_mm < 200
    assert plausibility_warnings(labels, meta, measures) == []
