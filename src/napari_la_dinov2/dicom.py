"""DICOM in: an MR series from a folder, a .zip or one multi-frame file.

``read_dicom`` gives the same ``(array, VolumeMeta)`` as :func:`~napari_la_dinov2.volume_files.read_volume`:
array axes (column, row, slice) as dcm2niix writes NIfTI, so axis 2 is the slice axis, and
``meta.affine`` maps voxel (i, j, k) to RAS mm. DICOM's patient space is LPS and its
ImageOrientationPatient gives first the direction along a row (the way the column index grows),
then the direction down a column (the way the row index grows); PixelSpacing is (between rows,
between columns). So voxel (i, j, k) sits at
``IPP_k + i * PixelSpacing[1] * IOP[:3] + j * PixelSpacing[0] * IOP[3:]`` (LPS).

Every file's header is read on its own with pydicom (:mod:`.dicom_headers`: a file that cannot
be parsed is skipped and named), and every tag used is checked before any pixel is decoded or
any model loaded: VR, multiplicity, finite values, pixel bytes against Rows x Columns, and the
affine through the NIfTI rules (:mod:`.dicom_geometry`). GDCM (through SimpleITK) then decodes
classic one-slice-per-file series; highdicom reads enhanced multi-frame files, which GDCM only
half understands. A zip is extracted with a running size limit (:mod:`.dicom_zip`).
:mod:`.dicom_seg` writes a mask back as a DICOM SEG that references the source series.
SimpleITK, pydicom and highdicom are imported inside the functions: a NIfTI job never loads them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_geometry import GEOMETRY, slice_geometry
from .dicom_headers import (
    DicomFile,
    FolderScan,
    check_image_header,
    file_where,
    is_dicom_file,
    read_file,
    scan_folder,
    tag_int,
)
from .dicom_zip import extracted
from .errors import InputError
from .volume import VolumeMeta, check_content
from .volume_file_checks import check_geometry

__all__ = ["is_dicom_file", "looks_like_dicom", "read_dicom"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Image-like objects that are not images to segment: a SEG (maybe our own output, saved beside
# its series), RT dose grids, raw data.
_NOT_IMAGES = {SEG_SOP_CLASS, "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.66"}


def looks_like_dicom(path: str | os.PathLike, max_files: int = 64) -> bool:
    """True for a .zip or a folder with a DICOM file among its first files: cheap, because napari
    asks this for every path it opens. A lone DICOM file is left out on purpose: folders of masks
    are listed with this test, and a SEG saved there is not a mask to read."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".zip"
    if not path.is_dir():
        return False
    seen = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if is_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= max_files:
                return False
    return False


def read_dicom(path: str | os.PathLike, series_uid: str | None = None):
    """Read one DICOM MR series from a folder, a .zip or one multi-frame file: ``(array, meta)``.

    ``series_uid`` picks a series where there are several. Raises InputError (one sentence
    naming the path) for anything that is not one evenly spaced 3D image series; files that
    cannot be parsed are skipped and named in ``meta.extra["read_warnings"]``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
    with _libraries_quiet():
        if path.is_file() and path.suffix.lower() == ".zip":
            with extracted(path) as folder:
                return _read_folder(folder, series_uid, path)
        return _read_folder(path, series_uid, path)


@contextmanager
def _libraries_quiet() -> Iterator[None]:
    """pydicom's and highdicom's warnings and log records about values: every value used is
    checked here and refused in one sentence, and the command line's refusal is one line."""
    loggers = [logging.getLogger(name) for name in ("pydicom", "highdicom")]
    disabled = [logger.disabled for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.disabled = True
        try:
            yield
        finally:
            for logger, was in zip(loggers, disabled):
                logger.disabled = was


def _scan(path: Path, source: Path) -> FolderScan:
    if path.is_dir():
        return scan_folder(path)
    if not is_dicom_file(path):
        raise InputError(f"{path} is not a DICOM file; give a DICOM folder or .zip.")
    try:
        entry = read_file(path, path.name)
    except Exception as error:  # pydicom raises many kinds for a damaged file
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise InputError(f"{source} is not a readable DICOM file ({reason}).") from error
    return FolderScan(series={str(entry.header.get("SeriesInstanceUID", "") or "?"): [entry]})


def _read_folder(folder: Path, series_uid: str | None, source: Path):
    scan = _scan(folder, source)
    try:
        if scan.series:
            return _read_series(source, series_uid, scan)
        if scan.others:  # files without a series (a DICOMDIR, ...): say what they are
            raise InputError(
                f"{source} holds no DICOM image series to segment, only "
                f"{', '.join(sorted(scan.others))}; give the folder of the MR image series."
            )
        what = "readable DICOM files" if scan.skipped else "DICOM files"
        raise InputError(
            f"{source} holds no {what}; give a folder (or .zip) with a DICOM MR series."
        )
    except InputError as error:
        if not scan.skipped:
            raise
        raise InputError(f"{error} ({_skipped_note(scan.skipped)})") from error


def _skipped_note(skipped: list[str]) -> str:
    shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} could not be read: {shown}"


def _summaries(series: dict[str, list[DicomFile]]) -> dict[str, tuple[str, str, int, bool]]:
    """UID -> (description, SOP class name, slice count, is an image) from one file each."""
    import pydicom

    out = {}
    for uid, files in series.items():
        ds = files[0].header
        sop = str(ds.get("SOPClassUID", "") or "")
        frames = len(files)
        if len(files) == 1:
            try:
                frames = int(ds.get("NumberOfFrames", 1) or 1)
            except (TypeError, ValueError):
                frames = 1
        # By what its files hold, not by their size tags, which may be the broken part.
        has_pixels = any(f.pixel_bytes is not None or "Rows" in f.header for f in files)
        is_image = has_pixels and sop not in _NOT_IMAGES
        name = pydicom.uid.UID(sop).name if sop else "no SOP class"
        out[uid] = (str(ds.get("SeriesDescription", "")), name, frames, is_image)
    return out


def _listing(summaries, uids) -> str:
    return "; ".join(f"{uid} ('{summaries[uid][0]}', {summaries[uid][2]} slices)" for uid in uids)


@dataclass
class _Plan:
    """What the headers say of one series, all checked: its files in slice order and the LPS
    affine (None for a multi-frame file, whose geometry highdicom computes)."""

    uid: str
    files: list[DicomFile]
    affine: np.ndarray | None


def _choose(source: Path, series_uid: str | None, series) -> tuple[_Plan, list[str]]:
    """The series to read, planned; with several image series and no ``--series``, the ones
    whose headers are broken are set aside (and named) when exactly one good series is left."""
    summaries = _summaries(series)
    images = [uid for uid, s in summaries.items() if s[3]]
    if series_uid is not None and series_uid not in series:
        known = _listing(summaries, images) if images else "no image series"
        raise InputError(f"{source} has no DICOM series {series_uid}; it holds {known}.")
    if series_uid is None and len(images) > 1:
        plans, notes = {}, []
        for uid in images:
            try:
                plans[uid] = _plan(source, uid, series[uid])
            except InputError as error:
                files = ", ".join(f.name for f in series[uid][:3])
                notes.append(
                    f"series {uid} ('{summaries[uid][0]}', file {files}) was set aside: {error}"
                )
        if len(plans) == 1:
            return next(iter(plans.values())), notes
        raise InputError(
            f"{source} holds {len(images)} DICOM image series: {_listing(summaries, images)}; "
            "pick one with --series UID."
        )
    chosen = series_uid or (images[0] if images else next(iter(series)))
    if not summaries[chosen][3]:
        kinds = sorted({summaries[uid][1] for uid in series})
        raise InputError(
            f"{source} holds no DICOM image series to segment, only {', '.join(kinds)}; "
            "give the folder of the MR image series."
        )
    return _plan(source, chosen, series[chosen]), []


def _plan(source: Path, uid: str, files: list[DicomFile]) -> _Plan:
    """Every header check of one series, before any pixel is read or any model loaded."""
    frames = [tag_int(f.header, "NumberOfFrames", file_where(source, f), 1) for f in files]
    if min(frames) < 1:
        bad = files[int(np.argmin(frames))]
        raise InputError(
            f"{file_where(source, bad)} has NumberOfFrames {min(frames)}; its header is damaged."
        )
    if len(files) == 1 and frames[0] > 1:
        check_image_header(files[0], file_where(source, files[0]), frames[0])
        return _Plan(uid, files, affine=None)
    if len(files) == 1:
        raise InputError(
            f"{source}: series {uid} is a single 2D image; a 3D volume (a series of slices) "
            "is needed."
        )
    if max(frames) > 1:
        raise InputError(
            f"{source}: series {uid} holds {len(files)} multi-frame files; give one of them."
        )
    for entry in files:
        check_image_header(entry, file_where(source, entry))
    order, affine = slice_geometry(source, uid, files)
    return _Plan(uid, [files[k] for k in order], affine=affine)


def _read_series(source: Path, series_uid: str | None, scan: FolderScan):
    plan, notes = _choose(source, series_uid, scan.series)
    if plan.affine is None:
        volume, affine = _read_multiframe(source, plan.files[0].path)
        check_geometry(_LPS_TO_RAS @ affine, source, geometry=GEOMETRY)
    else:
        volume, affine = _read_pixels(plan.files, source), plan.affine
    check_content(volume, source)
    headers = [f.header for f in plan.files]
    extra = {
        "series_uid": plan.uid,
        "study_uid": str(headers[0].get("StudyInstanceUID", "")),
        "sop_instance_uids": [str(h.get("SOPInstanceUID", "")) for h in headers],
        # Pixel-less headers, in slice order: all the SEG writer needs, and they outlive a zip's
        # temporary folder.
        "dicom_headers": headers,
        "read_warnings": [*(f"skipped {s}" for s in scan.skipped), *notes],
    }
    meta = VolumeMeta(
        affine=_LPS_TO_RAS @ affine,
        shape=volume.shape,
        source=str(source),
        format="dicom",
        extra=extra,
    )
    return volume, meta


@contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Drop what C libraries (GDCM, libjpeg) write on file descriptor 2 meanwhile: the command
    line's refusal is one line, and a corrupt JPEG series makes libjpeg print dozens (GDCM's
    exception still says what failed)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _read_pixels(files: list[DicomFile], source: Path) -> np.ndarray:
    """Stack the files in the given order with GDCM, rescaled (slope/intercept per file)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([f.path for f in files])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with _c_stderr_silenced():
            image = reader.Execute()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown"
        raise InputError(
            f"{source}: the DICOM pixel data could not be decoded ({reason[:200]})."
        ) from error
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    # SimpleITK's array is (slice, row, column); ours is (column, row, slice). The transposed
    # view is Fortran-ordered, as nibabel gives a NIfTI: same layout, same float sums, so a DICOM
    # and a NIfTI copy of one scan segment identically.
    volume = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    expected = (int(files[0].header.Columns), int(files[0].header.Rows), len(files))
    if volume.shape != expected:
        raise InputError(
            f"{source}: the decoder gave {volume.shape} voxels where the headers say {expected}; "
            "the pixel data does not match its headers."
        )
    return volume


def _read_multiframe(source: Path, file: str) -> tuple[np.ndarray, np.ndarray]:
    """An enhanced (or legacy converted) multi-frame file, through highdicom's volume logic."""
    import highdicom as hd

    try:
        volume = hd.imread(file).get_volume(
            dtype=np.float32, apply_modality_transform=True, apply_real_world_transform=False
        )
    except (ValueError, RuntimeError, AttributeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise InputError(
            f"{source}: the multi-frame DICOM file is not one evenly spaced 3D volume ({reason})."
        ) from error
    # highdicom's axes are (slice, row, column); its affine maps them to LPS.
    array = volume.array.transpose(2, 1, 0)
    affine = np.asarray(volume.affine, dtype=float)[:, [2, 1, 0, 3]]
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    if affine[:3, 2] @ normal < 0:
        # Slices ascending along the normal, as for a classic series, whatever the frame order.
        affine[:3, 3] += (array.shape[2] - 1) * affine[:3, 2]
        affine[:3, 2] *= -1
        array = array[:, :, ::-1]
    return np.asfortranarray(array), affine
