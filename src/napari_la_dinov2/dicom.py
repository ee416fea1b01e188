"""DICOM in: an MR series from a folder, a .zip or one multi-frame file.

``read_dicom`` gives the same ``(array, VolumeMeta)`` as :func:`~napari_la_dinov2.io.read_volume`:
array axes (column, row, slice) as dcm2niix writes NIfTI, so axis 2 is the slice axis, and
``meta.affine`` maps voxel (i, j, k) to RAS mm. DICOM's patient space is LPS and its
ImageOrientationPatient gives first the direction along a row (the way the column index grows),
then the direction down a column (the way the row index grows); PixelSpacing is (between rows,
between columns). So voxel (i, j, k) sits at
``IPP_k + i * PixelSpacing[1] * IOP[:3] + j * PixelSpacing[0] * IOP[3:]`` (LPS).

GDCM (through SimpleITK) finds the series and reads classic one-slice-per-file series;
highdicom reads enhanced multi-frame files, which GDCM only half understands. The geometry is
computed here from every slice's ImagePositionPatient, after checking that the slices are evenly
spaced: a gap would silently squeeze the anatomy. :mod:`.dicom_seg` writes a mask back as a DICOM
SEG that references the source series, for PACS, 3D Slicer or OHIF.
SimpleITK, pydicom and highdicom are imported inside the functions: a NIfTI job never loads them.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import InputError
from .volume import VolumeMeta, check_content

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Image-like objects that are not images to segment: a SEG (maybe our own output, saved beside
# its series), RT dose grids, raw data.
_NOT_IMAGES = {SEG_SOP_CLASS, "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.66"}
# A zip larger than this once extracted is refused: a real MR series is tens of MB (zip bomb).
MAX_UNZIPPED_BYTES = 8 * 1024**3
# Slice gaps may differ by rounding in the DS strings; more than this is a missing or extra slice.
GAP_TOLERANCE_MM = 0.01
GAP_TOLERANCE_RELATIVE = 0.01


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble (what every modern writer does)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


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
    naming the path) for anything that is not one evenly spaced 3D image series.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
    if path.is_file() and path.suffix.lower() == ".zip":
        with _extracted(path) as folder:
            return _read_folder(folder, series_uid, path)
    if path.is_file():
        if not is_dicom_file(path):
            raise InputError(f"{path} is not a DICOM file; give a DICOM folder or .zip.")
        return _read_series(path, series_uid, {_series_uid(path): [str(path)]})
    return _read_folder(path, series_uid, path)


@contextmanager
def _extracted(zip_path: Path) -> Iterator[Path]:
    """Extract a zip to a temporary folder, refusing members that would land outside it."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{zip_path} is not a readable zip file ({error}).") from error
    with archive, tempfile.TemporaryDirectory(prefix="la-dinov2-dicom-") as tmp:
        members = archive.infolist()
        for member in members:
            name = member.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise InputError(
                    f"{zip_path} holds the member '{member.filename}' that points outside the "
                    "archive (an absolute path or '..'); refusing to extract it."
                )
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise InputError(
                f"{zip_path} would extract to more than {MAX_UNZIPPED_BYTES / 1024**3:.0f} GB; "
                "it is not one MR series."
            )
        archive.extractall(tmp)
        yield Path(tmp)


def _series_uid(file: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(file, stop_before_pixels=True).get("SeriesInstanceUID", ""))


def _find_series(folder: Path) -> dict[str, list[str]]:
    """Series UID -> its files, over the folder and its subfolders, as GDCM groups them."""
    import SimpleITK as sitk

    series: dict[str, list[str]] = {}
    # GDCM warns on stderr about folders without series; that is an answer here, not a problem.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        for root, _dirs, files in os.walk(folder):
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) if files else ():
                names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid)
                if uid:  # a DICOMDIR or other file without a SeriesInstanceUID is not a series
                    series.setdefault(uid, []).extend(names)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    return series


def _read_folder(folder: Path, series_uid: str | None, source: Path):
    series = _find_series(folder)
    if series:
        return _read_series(source, series_uid, series)
    # GDCM lists image series only: say what the DICOM files are, if there are any.
    kinds = _sop_class_names(folder)
    if kinds:
        raise InputError(
            f"{source} holds no DICOM image series to segment, only {', '.join(kinds)}; "
            "give the folder of the MR image series."
        )
    raise InputError(
        f"{source} holds no DICOM files; give a folder (or .zip) with a DICOM MR series."
    )


def _sop_class_names(folder: Path, max_files: int = 50) -> list[str]:
    import pydicom

    names: set[str] = set()
    files = (Path(root) / name for root, _dirs, found in os.walk(folder) for name in found)
    for path in (p for p in files if is_dicom_file(p)):
        sop = pydicom.dcmread(path, stop_before_pixels=True).get("SOPClassUID", "")
        names.add(pydicom.uid.UID(str(sop)).name if sop else "no SOP class")
        if len(names) >= 5 or max_files <= 1:
            break
        max_files -= 1
    return sorted(names)


def _summaries(series: dict[str, list[str]]) -> dict[str, tuple[str, str, int, bool]]:
    """UID -> (description, SOP class name, slice count, is an image) from one file each."""
    import pydicom

    out = {}
    for uid, files in series.items():
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        sop = str(ds.get("SOPClassUID", ""))
        frames = int(ds.get("NumberOfFrames", 1) or 1) if len(files) == 1 else len(files)
        is_image = "Rows" in ds and "Columns" in ds and sop not in _NOT_IMAGES
        name = pydicom.uid.UID(sop).name if sop else "no SOP class"
        out[uid] = (str(ds.get("SeriesDescription", "")), name, frames, is_image)
    return out


def _listing(summaries, uids) -> str:
    return "; ".join(f"{uid} ('{summaries[uid][0]}', {summaries[uid][2]} slices)" for uid in uids)


def _choose(source: Path, series_uid: str | None, series: dict[str, list[str]]) -> str:
    summaries = _summaries(series)
    images = [uid for uid, s in summaries.items() if s[3]]
    if series_uid is not None and series_uid not in series:
        known = _listing(summaries, images) if images else "no image series"
        raise InputError(f"{source} has no DICOM series {series_uid}; it holds {known}.")
    if series_uid is None and len(images) > 1:
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
    return chosen


def _read_series(source: Path, series_uid: str | None, series: dict[str, list[str]]):
    import pydicom

    uid = _choose(source, series_uid, series)
    files = series[uid]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    frames = int(headers[0].get("NumberOfFrames", 1) or 1)
    if len(files) == 1 and frames > 1:
        volume, affine = _read_multiframe(source, files[0])
    elif len(files) == 1:
        raise InputError(
            f"{source}: series {uid} is a single 2D image; a 3D volume (a series of slices) "
            "is needed."
        )
    elif frames > 1:
        raise InputError(
            f"{source}: series {uid} holds {len(files)} multi-frame files; give one of them."
        )
    else:
        order, affine = _slice_geometry(source, uid, headers)
        headers = [headers[k] for k in order]
        volume = _read_pixels([files[k] for k in order], source)
    check_content(volume, source)
    extra = {
        "series_uid": uid,
        "study_uid": str(headers[0].get("StudyInstanceUID", "")),
        "sop_instance_uids": [str(h.SOPInstanceUID) for h in headers],
        # Pixel-less headers, in slice order: all the SEG writer needs, and they outlive a zip's
        # temporary folder.
        "dicom_headers": headers,
    }
    meta = VolumeMeta(
        affine=_LPS_TO_RAS @ affine,
        shape=volume.shape,
        source=str(source),
        format="dicom",
        extra=extra,
    )
    return volume, meta


def _slice_geometry(source: Path, uid: str, headers) -> tuple[list[int], np.ndarray]:
    """The slice order (along the normal) and the LPS affine of a one-slice-per-file series."""
    where = f"{source}: series {uid}"
    first = headers[0]
    for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if name not in first:
            raise InputError(f"{where} has no {name}; it cannot be placed in 3D space.")
    for h in headers:
        same = (
            (h.Rows, h.Columns) == (first.Rows, first.Columns)
            and np.allclose(h.ImageOrientationPatient, first.ImageOrientationPatient, atol=1e-4)
            and np.allclose(h.PixelSpacing, first.PixelSpacing, atol=1e-4)
        )
        if not same or "ImagePositionPatient" not in h:
            raise InputError(
                f"{where} mixes slices of different size, orientation or pixel spacing (a "
                "localizer?); it is not one 3D volume."
            )
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (column index grows), down a column
    positions = np.array([h.ImagePositionPatient for h in headers], dtype=float)
    order = np.argsort(positions @ np.cross(row_dir, col_dir), kind="stable")
    positions = positions[order]
    _check_gaps(where, positions, [headers[k] for k in order])
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    row_spacing, col_spacing = (float(s) for s in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing  # array axis 0 = column index
    affine[:3, 1] = col_dir * row_spacing  # array axis 1 = row index
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return [int(k) for k in order], affine


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


def _read_pixels(files: list[str], source: Path) -> np.ndarray:
    """Stack the files in the given order with GDCM, rescaled (slope/intercept per file)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown"
        raise InputError(
            f"{source}: the DICOM pixel data could not be decoded ({reason[:200]})."
        ) from error
    # SimpleITK's array is (slice, row, column); ours is (column, row, slice). The transposed
    # view is Fortran-ordered, as nibabel gives a NIfTI: same layout, same float sums, so a DICOM
    # and a NIfTI copy of one scan segment identically.
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


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
