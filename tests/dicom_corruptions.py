"""Broken DICOM series for the tests: each tag the reader uses corrupted in turn (missing, of the
wrong VR, of the wrong multiplicity, NaN, inf, 0, negative, huge, ...), in every slice or in one.

:data:`CORRUPTIONS` maps a case name to ``(edit, expected)``: ``edit(ds)`` spoils one pydicom
dataset in place, ``expected`` is a regular expression the refusal must match (it names what is
wrong, not a misleading neighbour). :func:`broken_series` writes the series with the edit
applied to all slices or to the middle one only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement

from tests.dicom_series import oblique_affine, oblique_stored, series_datasets, write_files

SHAPE = (16, 12, 5)  # small: the file writes 160 series


def _missing(keyword):
    def edit(ds):
        ds["PixelData"].VR = "OW"  # pydicom would ask BitsAllocated which VR it has
        del ds[keyword]

    return edit


def _raw(keyword, vr, value):
    """Set the tag to ``value`` stored as ``vr`` (strings go to the file as they are)."""

    def edit(ds):
        ds["PixelData"].VR = "OW"
        ds[keyword] = DataElement(tag_for_keyword(keyword), vr, value)

    return edit


def _values(keyword, *values):
    vr = pydicom.datadict.dictionary_VR(keyword)
    value = [str(v) for v in values] if vr in ("DS", "IS") else list(values)
    return _raw(keyword, vr, value if len(value) != 1 else value[0])


def _pixels(fraction=None, minus=0):
    def edit(ds):
        data = ds.PixelData
        keep = int(len(data) * fraction) if fraction is not None else len(data) - minus
        ds.PixelData = data[: keep - keep % 2]

    return edit


_UNIT = ("1", "0", "0", "0", "1", "0")
_TAG_CASES = {
    # keyword: {corruption: (edit, expected)}
    "PixelSpacing": {
        "missing": _missing("PixelSpacing"),
        "as text": _raw("PixelSpacing", "LO", "0.7mm"),
        "one value": _values("PixelSpacing", 0.7),
        "three values": _values("PixelSpacing", 0.7, 0.7, 0.7),
        "NaN": _values("PixelSpacing", "NaN", 0.7),
        "inf": _values("PixelSpacing", 0.7, "inf"),
        "zero": _values("PixelSpacing", 0, 0),
        "negative": _values("PixelSpacing", -0.7, 0.7),
        "huge": _values("PixelSpacing", 1e6, 1e6),
        "tiny": _values("PixelSpacing", 1e-4, 1e-4),
    },
    "ImageOrientationPatient": {
        "missing": _missing("ImageOrientationPatient"),
        "as text": _raw("ImageOrientationPatient", "LO", "axial"),
        "five values": _values("ImageOrientationPatient", *_UNIT[:5]),
        "seven values": _values("ImageOrientationPatient", *_UNIT, 0),
        "NaN": _values("ImageOrientationPatient", "NaN", *_UNIT[1:]),
        "inf": _values("ImageOrientationPatient", *_UNIT[:4], "inf", 0),
        "all zero": _values("ImageOrientationPatient", *[0] * 6),
        "collinear": _values("ImageOrientationPatient", 1, 0, 0, 1, 0, 0),
        "not unit": _values("ImageOrientationPatient", 1e6, 0, 0, 0, 1e6, 0),
        "oblique axes": _values("ImageOrientationPatient", 1, 0, 0, 0.7071, 0.7071, 0),
    },
    "ImagePositionPatient": {
        "missing": _missing("ImagePositionPatient"),
        "as text": _raw("ImagePositionPatient", "LO", "centre"),
        "two values": _values("ImagePositionPatient", 1, 2),
        "four values": _values("ImagePositionPatient", 1, 2, 3, 4),
        "NaN": _values("ImagePositionPatient", 1, "NaN", 3),
        "inf": _values("ImagePositionPatient", "-inf", 2, 3),
        "zero": _values("ImagePositionPatient", 0, 0, 0),
        "huge": _values("ImagePositionPatient", 1e20, 1e20, 1e20),
    },
    "Rows": {
        "missing": _missing("Rows"),
        "as text": _raw("Rows", "LO", "twelve"),
        "zero": _values("Rows", 0),
        "huge": _values("Rows", 65535),
    },
    "Columns": {
        "missing": _missing("Columns"),
        "as text": _raw("Columns", "LO", "sixteen"),
        "zero": _values("Columns", 0),
        "huge": _values("Columns", 65535),
    },
    "BitsAllocated": {
        "missing": _missing("BitsAllocated"),
        "64 bits": _values("BitsAllocated", 64),
        "zero": _values("BitsAllocated", 0),
        "as text": _raw("BitsAllocated", "LO", "16"),
    },
    "SamplesPerPixel": {
        "missing": _missing("SamplesPerPixel"),
        "three": _values("SamplesPerPixel", 3),
        "zero": _values("SamplesPerPixel", 0),
    },
    "PhotometricInterpretation": {
        "missing": _missing("PhotometricInterpretation"),
        "palette without table": _raw("PhotometricInterpretation", "CS", "PALETTE COLOR"),
        "RGB": _raw("PhotometricInterpretation", "CS", "RGB"),
    },
    "RescaleSlope": {
        "zero": _values("RescaleSlope", 0),
        "NaN": _values("RescaleSlope", "NaN"),
        "inf": _values("RescaleSlope", "inf"),
        "huge": _values("RescaleSlope", 1e300),
        "as text": _raw("RescaleSlope", "LO", "one"),
        "two values": _values("RescaleSlope", 1, 1),
    },
    "RescaleIntercept": {
        "NaN": _values("RescaleIntercept", "NaN"),
        "-inf": _values("RescaleIntercept", "-inf"),
        "huge": _values("RescaleIntercept", 1e300),
        "as text": _raw("RescaleIntercept", "LO", "zero"),
    },
    "NumberOfFrames": {
        "zero": _values("NumberOfFrames", 0),
        "negative": _values("NumberOfFrames", -1),
        "as text": _raw("NumberOfFrames", "LO", "many"),
        "two per file": _values("NumberOfFrames", 2),
    },
    "PixelData": {
        "missing": _missing("PixelData"),
        "half": _pixels(fraction=0.5),
        "one pixel short": _pixels(minus=2),
        "empty": _pixels(fraction=0.0),
    },
}
# What each refusal must name, by tag (a geometry tag spoilt in one slice may instead show as
# slices that do not match, which is what they are).
_EXPECTED = {
    "PixelSpacing": r"PixelSpacing|mixes slices",
    "ImageOrientationPatient": r"ImageOrientationPatient|mixes slices",
    "ImagePositionPatient": r"ImagePositionPatient|slice spacing|slice positions",
    "Rows": r"Rows|pixel data|mixes slices",
    "Columns": r"Columns|pixel data|mixes slices",
    "BitsAllocated": r"BitsAllocated|-bit pixels",
    "SamplesPerPixel": r"SamplesPerPixel",
    "PhotometricInterpretation": r"PhotometricInterpretation",
    "RescaleSlope": r"RescaleSlope",
    "RescaleIntercept": r"RescaleIntercept",
    "NumberOfFrames": r"NumberOfFrames|multi-frame files",
    "PixelData": r"PixelData|pixel data",
}
CORRUPTIONS = {
    f"{keyword} {corruption}": (edit, _EXPECTED[keyword])
    for keyword, cases in _TAG_CASES.items()
    for corruption, edit in cases.items()
}


def broken_series(folder: Path, edit, where: str) -> Path:
    """A small oblique series with ``edit`` applied to ``where`` ('all' or 'one' slice)."""
    datasets = series_datasets(oblique_stored(SHAPE), oblique_affine())
    settings = pydicom.config.settings
    mode, settings.writing_validation_mode = settings.writing_validation_mode, pydicom.config.IGNORE
    try:  # pydicom would refuse to write most of these: exactly what is wanted here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for ds in datasets if where == "all" else datasets[2:3]:
                edit(ds)
            write_files(folder, datasets)
    finally:
        settings.writing_validation_mode = mode
    return folder


def truncated_file_series(folder: Path, where: str) -> Path:
    """Files cut in the middle of their pixel data, as an interrupted copy leaves them."""
    paths = write_files(folder, series_datasets(oblique_stored(SHAPE), oblique_affine()))
    for path in paths if where == "all" else paths[2:3]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 100])
    return folder


def good_series(folder: Path, **kwargs) -> tuple[Path, np.ndarray]:
    """The unspoilt series and the volume it holds."""
    stored = oblique_stored(SHAPE)
    write_files(folder, series_datasets(stored, oblique_affine(), **kwargs))
    return folder, stored.astype(np.float32)


def jpeg_series(folder: Path, *, corrupt: bool) -> tuple[Path, np.ndarray]:
    """A JPEG Lossless series written by GDCM (through SimpleITK), its compressed bytes garbled
    with ``corrupt``: libjpeg then prints a line per error on file descriptor 2."""
    import SimpleITK as sitk

    stored = oblique_stored(SHAPE).astype(np.uint16)
    folder.mkdir(parents=True)
    for k in range(SHAPE[2]):
        image = sitk.GetImageFromArray(stored[None, :, :, k].transpose(0, 2, 1))
        image.SetSpacing((0.7, 0.5, 2.5))
        for tag, value in (
            ("0020|000e", "1.2.826.0.1.3680043.8.498.1"),
            ("0008|0060", "MR"),
            ("0020|0032", f"0\\0\\{2.5 * k}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(k + 1)),
        ):
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.KeepOriginalImageUIDOn()
        writer.UseCompressionOn()
        writer.SetCompressor("JPEG")
        writer.SetFileName(str(folder / f"IM{k:04d}"))
        writer.Execute(image)
    if corrupt:
        for path in folder.iterdir():
            data = bytearray(path.read_bytes())
            start = data.index(b"\xff\xd8") + 40  # past the JPEG start and its first header
            data[start:-10] = bytes((b * 7 + 13) & 0xFF for b in data[start:-10])
            path.write_bytes(bytes(data))
    return folder, stored.astype(np.float32)
