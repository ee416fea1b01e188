"""DICOM headers read defensively and believed only once checked.

:func:`scan_folder` reads every DICOM file of a folder (header only) on its own: a file pydicom
cannot parse is named and skipped, so one stray file in a PACS export does not hide the series
beside it. :func:`tag_numbers` reads a numeric tag with the VR and multiplicity the standard
gives it, finite; :func:`check_image_header` checks what the pixels need (a grayscale image of
8, 16 or 32-bit samples, a finite non-zero rescale) and that the file holds as many pixel bytes
as its header claims (truncated PixelData would otherwise be read as junk).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

PIXEL_DATA = 0x7FE00010
# Float32's largest value: a rescale that overflows it turns every voxel into inf.
_FLOAT32_MAX = 3.4e38
# The VR of each tag read here (PS3.6); a file storing one as another VR is refused.
_VR = {
    "PixelSpacing": "DS",
    "ImageOrientationPatient": "DS",
    "ImagePositionPatient": "DS",
    "RescaleSlope": "DS",
    "RescaleIntercept": "DS",
    "NumberOfFrames": "IS",
    "Rows": "US",
    "Columns": "US",
    "BitsAllocated": "US",
    "BitsStored": "US",
    "SamplesPerPixel": "US",
    "PixelRepresentation": "US",
}


@dataclass
class DicomFile:
    """One file's pixel-less header, its name for messages and what its pixel element holds."""

    path: str
    name: str
    header: object
    pixel_bytes: int | None  # None: no PixelData; -1: encapsulated (compressed) fragments
    pixel_end: int = 0  # where the pixel element ends in the file (offset + length)
    file_size: int = 0


@dataclass
class FolderScan:
    """Series UID -> its files; files skipped (named, with why); SOP classes of series-less files."""

    series: dict[str, list[DicomFile]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    others: set[str] = field(default_factory=set)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble (what every modern writer does)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def file_where(source, entry: DicomFile) -> str:
    """How a message names one file: the input and the file's path inside it."""
    return f"{source}: file {entry.name}" if str(source) != entry.path else str(source)


def read_file(path: str | os.PathLike, name: str) -> DicomFile:
    """The header of one file, pixel element measured but not kept (its value is never read:
    values over 1 KiB are deferred, then the other deferred ones are loaded while the file is
    there, because a zip's temporary folder is gone when the SEG writer needs the header)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's complaints about values: checked here instead
        header = pydicom.dcmread(path, defer_size=1024)
        raw = header.get_item(PIXEL_DATA) if PIXEL_DATA in header else None
        if raw is not None:
            del header[PIXEL_DATA]
        for element in header.iterall():
            _ = element.value
    size = os.path.getsize(path)
    if raw is None:
        return DicomFile(str(path), name, header, pixel_bytes=None, file_size=size)
    if not hasattr(raw, "value_tell"):  # read already (small, or converted): its bytes count
        undefined = raw.is_undefined_length
        length = -1 if undefined else len(raw.value or b"")
        return DicomFile(str(path), name, header, pixel_bytes=length, file_size=size)
    undefined = raw.length == 0xFFFFFFFF
    length = -1 if undefined else int(raw.length)
    return DicomFile(
        str(path),
        name,
        header,
        pixel_bytes=length,
        pixel_end=int(raw.value_tell) + max(length, 0),
        file_size=size,
    )


def scan_folder(folder: Path) -> FolderScan:
    """Every DICOM file under ``folder`` grouped by SeriesInstanceUID; unreadable files skipped."""
    import pydicom

    scan = FolderScan()
    for root, _dirs, files in os.walk(folder):
        for file_name in sorted(files):
            path = Path(root) / file_name
            if not is_dicom_file(path):
                continue
            name = str(path.relative_to(folder))
            try:
                entry = read_file(path, name)
            except Exception as error:  # pydicom raises many kinds for a damaged file
                reason = " ".join(str(error).split())[:120] or type(error).__name__
                scan.skipped.append(f"{name} ({reason})")
                continue
            uid = str(entry.header.get("SeriesInstanceUID", "") or "")
            meta = getattr(entry.header, "file_meta", None) or {}
            sop = str(entry.header.get("SOPClassUID", "") or "") or str(
                meta.get("MediaStorageSOPClassUID", "") or ""
            )
            if uid:
                scan.series.setdefault(uid, []).append(entry)
            elif sop:  # a DICOMDIR or other file without a series
                scan.others.add(pydicom.uid.UID(sop).name)
            else:  # parsed, but nothing in it says what it is: junk after a DICOM preamble
                scan.skipped.append(f"{name} (no DICOM header could be read)")
    return scan


def tag_numbers(header, keyword: str, count: int, where: str, *, positive=False) -> list[float]:
    """``count`` finite numbers from a numeric tag, refused in one sentence when the tag is
    missing, stored with another VR, of another multiplicity or not finite (or not > 0)."""
    from pydicom.multival import MultiValue

    if keyword not in header:
        raise InputError(f"{where} has no {keyword}; it cannot be read as an image in 3D space.")
    element = header[keyword]
    if element.VR != _VR[keyword]:
        raise InputError(
            f"{where} stores {keyword} as {element.VR}, not {_VR[keyword]}; its header is damaged."
        )
    value = element.value
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count:
        shown = "\\".join(map(str, values))[:60]
        raise InputError(
            f"{where} has {keyword} '{shown}' where {count} number"
            f"{'s are' if count > 1 else ' is'} needed; its header is damaged."
        )
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers):
        kind = "positive finite" if positive else "finite"
        raise InputError(f"{where} has {keyword} {numbers}; it must hold {kind} numbers.")
    return numbers


def tag_int(header, keyword: str, where: str, default: int | None = None) -> int:
    """One integer tag (``default`` when absent and allowed to be)."""
    if keyword not in header and default is not None:
        return default
    value = tag_numbers(header, keyword, 1, where)[0]
    if value != int(value):
        raise InputError(f"{where} has {keyword} {value}, not a whole number.")
    return int(value)


def check_image_header(entry: DicomFile, where: str, frames: int = 1) -> None:
    """What the pixels of one file need, from its header alone."""
    header = entry.header
    rows, columns = tag_int(header, "Rows", where), tag_int(header, "Columns", where)
    bits = tag_int(header, "BitsAllocated", where)
    samples = tag_int(header, "SamplesPerPixel", where)
    photometric = str(header.get("PhotometricInterpretation", "") or "").strip().upper()
    if rows < 1 or columns < 1:
        raise InputError(f"{where} has Rows {rows} and Columns {columns}: no image to read.")
    if bits not in (8, 16, 32):
        raise InputError(
            f"{where} has {bits}-bit pixels; only 8, 16 and 32-bit grayscale images are read."
        )
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            f"{where} has PhotometricInterpretation '{photometric}' with SamplesPerPixel "
            f"{samples}; an MR series is grayscale (MONOCHROME1 or MONOCHROME2, one sample)."
        )
    _check_rescale(header, where, tag_int(header, "BitsStored", where, default=bits))
    _check_pixel_bytes(entry, where, rows * columns * frames * bits // 8)


def _check_rescale(header, where: str, bits_stored: int) -> None:
    slope = tag_numbers(header, "RescaleSlope", 1, where)[0] if "RescaleSlope" in header else 1.0
    intercept = 0.0
    if "RescaleIntercept" in header:
        intercept = tag_numbers(header, "RescaleIntercept", 1, where)[0]
    if slope == 0:
        raise InputError(
            f"{where} has RescaleSlope 0, which turns every pixel into one value; "
            "its header is wrong."
        )
    if abs(slope) * 2.0 ** min(bits_stored, 32) + abs(intercept) > _FLOAT32_MAX:
        raise InputError(
            f"{where} has RescaleSlope {slope:g} and RescaleIntercept {intercept:g}, which put "
            "pixels beyond 32-bit floats; its header is wrong."
        )


def _check_pixel_bytes(entry: DicomFile, where: str, expected: int) -> None:
    if entry.pixel_bytes is None:
        raise InputError(f"{where} has no PixelData; it holds no image.")
    if entry.pixel_bytes < 0:
        return  # compressed fragments: their size says nothing; the decoder checks them
    if entry.pixel_bytes < expected or entry.pixel_end > entry.file_size:
        held = min(entry.pixel_bytes, max(entry.file_size - entry.pixel_end + entry.pixel_bytes, 0))
        raise InputError(
            f"{where} holds {held} bytes of pixel data where its header (Rows, Columns, "
            f"BitsAllocated, frames) needs {expected}; the file is truncated or damaged."
        )
