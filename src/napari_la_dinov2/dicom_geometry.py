"""The geometry of a one-slice-per-file DICOM series, from its tags, checked as a NIfTI header is.

Each slice's PixelSpacing, ImageOrientationPatient and ImagePositionPatient are read with their
VR and multiplicity, finite (:func:`~napari_la_dinov2.dicom_headers.tag_numbers`); the affine
they make goes through :func:`~napari_la_dinov2.volume_file_checks.check_geometry`, the same rules as a
NIfTI or NRRD header (invertible, voxel sizes 0.01-50 mm), first for the plane, then for the
whole stack. Slices must be evenly spaced: a gap would silently squeeze the anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dicom_headers import DicomFile, file_where, tag_int, tag_numbers
from .errors import InputError
from .volume_file_checks import check_geometry

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Slice gaps may differ by rounding in the DS strings; more than this is a missing or extra slice.
GAP_TOLERANCE_MM = 0.01
GAP_TOLERANCE_RELATIVE = 0.01
# ImageOrientationPatient holds two unit vectors at right angles; DS rounding stays far inside.
ORIENTATION_TOLERANCE = 0.01
GEOMETRY = "the geometry of its PixelSpacing, ImageOrientationPatient and ImagePositionPatient"


def slice_geometry(source: Path, uid: str, files: list[DicomFile]):
    """The slice order (along the normal) and the LPS affine of a one-slice-per-file series,
    refused through :func:`~napari_la_dinov2.volume_file_checks.check_geometry` (the NIfTI rules)."""
    where = f"{source}: series {uid}"
    tags = [_plane(f.header, file_where(source, f)) for f in files]
    size, spacing, iop, _ = tags[0]
    for other in tags[1:]:
        same = (
            other[0] == size
            and np.allclose(other[2], iop, atol=1e-4)
            and np.allclose(other[1], spacing, atol=1e-4)
        )
        if not same:
            raise InputError(
                f"{where} mixes slices of different size, orientation or pixel spacing (a "
                "localizer?); it is not one 3D volume."
            )
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (column index grows), down a column
    row_spacing, col_spacing = spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing  # array axis 0 = column index
    affine[:3, 1] = col_dir * row_spacing  # array axis 1 = row index
    affine[:3, 2] = np.cross(row_dir, col_dir)
    affine[:3, 3] = tags[0][3]
    check_geometry(_LPS_TO_RAS @ affine, where, geometry=GEOMETRY)  # the plane, before sorting
    _check_orientation(where, row_dir, col_dir)
    positions = np.array([t[3] for t in tags])
    order = np.argsort(positions @ affine[:3, 2], kind="stable")
    positions = positions[order]
    _check_gaps(where, positions, [files[k].header for k in order])
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    affine[:3, 3] = positions[0]
    check_geometry(_LPS_TO_RAS @ affine, where, geometry=GEOMETRY)
    return [int(k) for k in order], affine


def _plane(header, where: str):
    """(rows, columns), PixelSpacing, ImageOrientationPatient, ImagePositionPatient: checked."""
    size = (tag_int(header, "Rows", where), tag_int(header, "Columns", where))
    spacing = np.array(tag_numbers(header, "PixelSpacing", 2, where, positive=True))
    iop = np.array(tag_numbers(header, "ImageOrientationPatient", 6, where))
    ipp = np.array(tag_numbers(header, "ImagePositionPatient", 3, where))
    return size, spacing, iop, ipp


def _check_orientation(where: str, row_dir: np.ndarray, col_dir: np.ndarray) -> None:
    lengths = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if (
        max(abs(n - 1.0) for n in lengths) > ORIENTATION_TOLERANCE
        or abs(row_dir @ col_dir) > ORIENTATION_TOLERANCE
    ):
        raise InputError(
            f"{where} has an ImageOrientationPatient whose two directions are not unit vectors "
            f"at right angles (lengths {lengths[0]:.3g} and {lengths[1]:.3g}, cosine "
            f"{row_dir @ col_dir:.3g}); its header is damaged."
        )


def _check_gaps(where: str, positions: np.ndarray, headers) -> None:
    """Refuse repeated positions (echoes, phases) and uneven steps (missing slices)."""
    steps = np.diff(positions, axis=0)
    gaps = np.linalg.norm(steps, axis=1)
    typical = float(np.median(gaps))
    if typical < GAP_TOLERANCE_MM or (gaps < GAP_TOLERANCE_MM).any():
        unique = len(positions) - int((gaps < GAP_TOLERANCE_MM).sum())
        raise InputError(
            f"{where} has {len(positions)} images at only {unique} slice positions (several "
            "echoes, phases or time points); export one 3D volume as its own series."
        )
    tolerance = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_RELATIVE * typical)
    off = np.linalg.norm(steps - np.median(steps, axis=0), axis=1) > tolerance
    if off.any():
        k = int(np.argmax(off))
        numbers = [h.get("InstanceNumber", "?") for h in headers[k : k + 2]]
        raise InputError(
            f"{where} has uneven slice spacing: {gaps[k]:.3f} mm between slices {k} and {k + 1} "
            f"(InstanceNumber {numbers[0]} and {numbers[1]}) where the others are "
            f"{typical:.3f} mm; a slice is missing or the series mixes stacks."
        )
