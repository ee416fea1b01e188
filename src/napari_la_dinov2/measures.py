"""Left-atrium measures from a binary mask and its geometry, in scanner millimetres.

Definitions (``mask`` on the grid of ``meta``; non-zero = foreground; the surface is the mesh of
:func:`napari_la_dinov2.mesh.mesh_from_mask`, in mm through the full affine, so oblique slices
and anisotropic voxels are handled):

- ``volume_ml``: :func:`napari_la_dinov2.scoring.metrics.la_volume_ml`, the one volume definition of
  this package: foreground voxel count x voxel volume / 1000, the voxel volume being the
  product of the voxel sizes (the column norms of the affine; equal to ``|det(affine)|`` for
  any rotation; a sheared sform would make them differ, and ``mesh_volume_ml`` is then right).
- ``mesh_volume_ml``: the volume enclosed by the surface mesh / 1000 (a check of the mesh: it
  agrees with ``volume_ml`` within 0.1% on the expert LA 2018 masks; it is smaller when the
  mask has several parts, as only the largest is meshed).
- ``surface_area_cm2``: the area of the smoothed surface mesh / 100 (not voxel faces, whose
  staircase over-estimates it: by 49% on the tests' oblique ellipsoid, where the mesh is 2%
  over the exact area).
- ``sphericity``: ``pi^(1/3) (6 V)^(2/3) / A``, V the mesh volume and A the mesh area: 1 for a
  sphere, smaller for any other shape. V is the mesh's own volume, not ``volume_ml``, because
  the isoperimetric inequality (hence sphericity <= 1) holds for a volume and the area of the
  same closed surface.
- ``max_diameter_mm``: the maximal 3D (Feret) diameter: the largest distance between two
  vertices of the surface mesh (found among the vertices of its convex hull).
- ``principal_diameters_mm``: the extent (max - min) of the surface mesh vertices along each
  principal axis of the mask, largest first. The principal axes are the eigenvectors of the
  covariance of the mask's voxel centres in scanner mm; ``principal_axes`` gives them as unit
  vectors in the mesh's coordinate system (LPS unless the mesh was made with ``ras=True``),
  each signed so that its largest component is positive.

:func:`plausibility_warnings` returns sentences, never raises: an empty mask, a mask that
touches the border of the segmented region, a volume outside 20-400 mL, and a mesh that
encloses over 5% less than the mask (the mask has several parts and only the largest is meshed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .mesh import mesh_from_mask, voxel_to_scanner
from .scoring.metrics import la_volume_ml
from .volume_files import VolumeMeta

# Adult left atria span about 20-400 mL from small healthy hearts to severe dilation; a mask
# outside that range is more likely a segmentation failure than an anatomy.
PLAUSIBLE_VOLUME_ML = (20.0, 400.0)
# A mesh enclosing this much less than the voxels means parts of the mask were left out of it.
MESH_VOLUME_TOLERANCE = 0.05
# Convex-hull vertices compared at a time for the Feret diameter (bounds memory to ~8 MB x n).
_FERET_CHUNK = 1024


@dataclass(frozen=True)
class LAMeasures:
    """LA measures of one mask (see the module docstring for the exact definitions)."""

    volume_ml: float
    mesh_volume_ml: float
    surface_area_cm2: float
    sphericity: float
    max_diameter_mm: float
    principal_diameters_mm: tuple[float, float, float]
    principal_axes: tuple[tuple[float, float, float], ...]
    coordinate_system: str = "LPS"

    def as_row(self) -> dict[str, float]:
        """Flat numbers for a CSV row (the axes' directions are left out)."""
        major, middle, minor = self.principal_diameters_mm
        return {
            "volume_ml": self.volume_ml,
            "mesh_volume_ml": self.mesh_volume_ml,
            "surface_area_cm2": self.surface_area_cm2,
            "sphericity": self.sphericity,
            "max_diameter_mm": self.max_diameter_mm,
            "diameter_major_mm": major,
            "diameter_middle_mm": middle,
            "diameter_minor_mm": minor,
        }


def sphericity(volume_mm3: float, area_mm2: float) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A``: 1 for a sphere, less for any other closed surface."""
    return math.pi ** (1 / 3) * (6.0 * volume_mm3) ** (2 / 3) / area_mm2


def feret_diameter(points: np.ndarray) -> float:
    """The largest distance between two of ``points`` (N x 3, mm)."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import cdist

    points = np.asarray(points, dtype=np.float64)
    try:
        # The farthest pair always lies on the convex hull, which holds a few % of the points.
        points = points[ConvexHull(points).vertices]
    except QhullError:  # flat or too few points: no hull, compare them all
        pass
    best = 0.0
    for start in range(0, len(points), _FERET_CHUNK):
        best = max(best, float(cdist(points[start : start + _FERET_CHUNK], points).max()))
    return best


def principal_axes(mask: np.ndarray, meta: VolumeMeta, *, ras: bool = False) -> np.ndarray:
    """Unit principal axes (rows, largest variance first) of the mask's voxel centres in
    scanner mm (LPS, or RAS with ``ras=True``), each signed so its largest component is > 0."""
    points = voxel_to_scanner(np.argwhere(np.asarray(mask) != 0), meta, ras=ras)
    if len(points) < 2:  # one voxel has no spread: the scanner axes serve (its diameters are 0)
        return np.eye(3)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points, rowvar=False))
    axes = eigenvectors[:, np.argsort(eigenvalues)[::-1]].T
    signs = np.sign(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)])
    return axes * signs[:, None]


def la_measures(mask: np.ndarray, meta: VolumeMeta, mesh=None) -> LAMeasures:
    """Measures of the LA mask; ``mesh`` is its :func:`mesh_from_mask` surface (made here when
    None). The mesh's ``metadata['coordinate_system']`` (default LPS) sets the frame of the
    principal axes. An empty mask is an InputError (no surface to measure)."""
    if not np.any(mask):
        raise InputError("the mask is empty (no foreground voxel); there is nothing to measure.")
    if mesh is None:
        mesh = mesh_from_mask(mask, meta)
    system = str(mesh.metadata.get("coordinate_system", "LPS")).upper()
    axes = principal_axes(mask, meta, ras=system == "RAS")
    vertices = np.asarray(mesh.vertices)
    projected = vertices @ axes.T
    extents = projected.max(axis=0) - projected.min(axis=0)
    volume_mm3, area_mm2 = float(mesh.volume), float(mesh.area)
    return LAMeasures(
        volume_ml=la_volume_ml(mask, meta.spacing),
        mesh_volume_ml=volume_mm3 / 1000.0,
        surface_area_cm2=area_mm2 / 100.0,
        sphericity=sphericity(volume_mm3, area_mm2),
        max_diameter_mm=feret_diameter(vertices),
        principal_diameters_mm=tuple(float(e) for e in extents),
        principal_axes=tuple(tuple(float(c) for c in axis) for axis in axes),
        coordinate_system=system,
    )


def _region_bounds(region, shape) -> list[tuple[int, int]]:
    """``(start, stop)`` per axis of a tuple of step-1 slices (missing axes: the whole axis)."""
    region = tuple(region) + (slice(None),) * (len(shape) - len(tuple(region)))
    if len(region) != len(shape) or not all(isinstance(s, slice) for s in region):
        raise ValueError(f"region must be a tuple of at most {len(shape)} slices, not {region!r}")
    bounds = []
    for axis_slice, size in zip(region, shape):
        start, stop, step = axis_slice.indices(size)
        if step != 1 or stop <= start:
            raise ValueError(f"region slices must be non-empty with step 1, not {axis_slice}")
        bounds.append((start, stop))
    return bounds


_OPPOSITE = dict(zip("RLAPSI", "LRPAIS"))


def border_contacts(mask: np.ndarray, region=None, axcodes=None) -> list[str]:
    """Sides of ``region`` (default: the whole volume) on which the mask has foreground, as
    ``"axis 0 start"``, ``"axis 2 end"`` ...; with ``axcodes`` (``meta.axcodes``) each side
    also names its anatomical direction, e.g. ``"axis 2 end (S)"``."""
    mask = np.asarray(mask) != 0
    bounds = _region_bounds(() if region is None else region, mask.shape)
    inside = mask[tuple(slice(a, b) for a, b in bounds)]
    sides = []
    for axis in range(inside.ndim):
        for name, index in (("start", 0), ("end", -1)):
            if np.take(inside, index, axis=axis).any():
                side = f"axis {axis} {name}"
                if axcodes is not None:  # an axis points to its code: its start is the opposite
                    code = axcodes[axis]
                    side += f" ({code if name == 'end' else _OPPOSITE.get(code, '?')})"
                sides.append(side)
    return sides


def plausibility_warnings(
    mask: np.ndarray, meta: VolumeMeta, measures: LAMeasures | None = None, region=None
) -> list[str]:
    """Warning sentences about a mask that is unlikely to be a whole left atrium (empty list:
    nothing suspicious). ``region``: the index slices that were segmented (default: all).
    ``measures`` may be None (the volume then comes from :func:`la_volume_ml` directly)."""
    mask = np.asarray(mask) != 0
    if not mask.any():
        return ["The mask is empty: no left atrium was found; check the image and the region."]
    warnings = []
    sides = border_contacts(mask, region, meta.axcodes)
    if sides:
        where = "volume" if region is None else "segmented region"
        warnings.append(
            f"The mask touches the border of the {where} ({', '.join(sides)}): the atrium may be "
            "cut off there, so its volume and diameters may be too small."
        )
    volume = measures.volume_ml if measures is not None else la_volume_ml(mask, meta.spacing)
    low, high = PLAUSIBLE_VOLUME_ML
    if not low <= volume <= high:
        warnings.append(
            f"The LA volume is {volume:.1f} mL, outside the {low:.0f}-{high:.0f} mL of adult "
            "left atria: check that the mask is a whole left atrium."
        )
    if measures is not None and measures.mesh_volume_ml < (1 - MESH_VOLUME_TOLERANCE) * volume:
        warnings.append(
            f"The mesh encloses {measures.mesh_volume_ml:.1f} mL of the mask's {volume:.1f} mL: "
            "the mask has several separate parts and only the largest was meshed and measured."
        )
    return warnings


@dataclass(frozen=True)
class MaskReport:
    """What :func:`measure_mask` says of a mask: its measures (None when empty), its
    plausibility warnings and its surface mesh (None when empty)."""

    measures: LAMeasures | None
    warnings: tuple[str, ...]
    mesh: object | None = None


def measure_mask(
    mask: np.ndarray, meta: VolumeMeta, *, region=None, ras: bool = False
) -> MaskReport:
    """The one way this package measures a mask: its surface mesh (LPS, or RAS with ``ras``), its
    LA measures when it is not empty, and its plausibility warnings. ``region``: the index
    slices that were segmented (the border warning then speaks of them), None for the volume."""
    mask = np.asarray(mask) != 0
    if not mask.any():
        return MaskReport(None, tuple(plausibility_warnings(mask, meta, None, region)))
    mesh = mesh_from_mask(mask, meta, ras=ras)
    measures = la_measures(mask, meta, mesh)
    return MaskReport(measures, tuple(plausibility_warnings(mask, meta, measures, region)), mesh)
