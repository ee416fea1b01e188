"""Checks of what a file claims before it is believed: the header's voxel count against the
file's size and the free memory, the data file an NRRD header points to, and the geometry.

A 352-byte NIfTI may claim 30000^3 voxels; an ``.nhdr`` may name ``../../etc/passwd`` as its
data file; an affine may be singular or have 10^6 mm voxels. Each is refused here with one
sentence, before any large allocation or any read outside the header's folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import InputError

# gzip (deflate) cannot compress better than about 1032:1; a claim beyond it is impossible.
MAX_COMPRESSION_RATIO = 1100
# Voxel sizes of any MRI we know of lie well inside this range (mm).
MIN_VOXEL_MM, MAX_VOXEL_MM = 0.01, 50.0


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None where unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency; a broken install still runs
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_claimed_size(
    path: Path, shape, itemsize: int, data_file: Path, *, offset: int = 0, compressed: bool = False
) -> None:
    """Refuse a header whose voxel count the data file cannot hold, or whose volume (as the
    float32 copy we make, plus the raw data) would not fit in the free memory."""
    try:
        voxels = math.prod(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{path}: the header's image size {shape!r} is not numbers.") from None
    if voxels <= 0:
        raise InputError(f"{path}: the header claims an image of size {tuple(shape)}.")
    claimed = voxels * int(itemsize)
    stored = data_file.stat().st_size - (0 if compressed else offset)
    limit = stored * MAX_COMPRESSION_RATIO if compressed else stored
    if claimed > limit:
        raise InputError(
            f"{path}: the header claims {'x'.join(map(str, shape))} voxels ({claimed:.3g} "
            f"bytes) but the file holds {data_file.stat().st_size} bytes; it is truncated or "
            "its header is wrong."
        )
    needed, free = claimed + voxels * 4, available_memory()
    if free is not None and needed > free:
        raise InputError(
            f"{path}: the image ({'x'.join(map(str, shape))} voxels) needs {needed / 2**30:.1f} "
            f"GiB of memory but only {free / 2**30:.1f} GiB is free."
        )


def check_nifti_header(path: Path, image) -> None:
    header = image.header
    compressed = path.name.lower().endswith(".gz")
    check_claimed_size(
        path,
        header.get_data_shape(),
        header.get_data_dtype().itemsize,
        path,
        offset=int(header.get_data_offset()),
        compressed=compressed,
    )


def check_nrrd_header(path: Path, header: dict) -> None:
    """The data file of a detached header must lie beside it or below it; its size must hold
    what the header claims."""
    data_file = path
    name = header.get("data file", header.get("datafile"))
    if name is not None:
        name = str(name)
        if name.upper().startswith("LIST") or "%" in name or " " in name.strip():
            raise InputError(f"{path}: multi-file NRRD data ({name!r}) is not supported.")
        data_file = (path.parent / name).resolve()
        if not data_file.is_relative_to(path.parent.resolve()):
            raise InputError(
                f"{path} points to the data file {name!r} outside its own folder; only data "
                "files beside the header (or below it) are read."
            )
        if not data_file.is_file():
            raise InputError(f"{path}: its data file {name!r} does not exist.")
    encoding = str(header.get("encoding", "raw")).lower()
    if encoding not in ("raw", "gzip", "gz", "bzip2", "bz2"):
        return  # text encodings: pynrrd parses the numbers, no allocation from the header alone
    try:
        itemsize = np.dtype(_nrrd_dtype(header)).itemsize
    except Exception:
        return  # pynrrd will name the unknown type
    # An attached header's few hundred bytes count as data here: lenient by that much.
    check_claimed_size(
        path, header.get("sizes", ()), itemsize, data_file, compressed=encoding != "raw"
    )


def _nrrd_dtype(header: dict):
    from nrrd.reader import _determine_datatype

    return _determine_datatype(header)


def check_geometry(affine: np.ndarray, path, *, geometry: str = "the header's geometry") -> None:
    """Refuse a singular or non-finite affine and voxel sizes outside any MRI's range: the one
    set of rules for every reader (NIfTI, NRRD, and the affine built from DICOM tags, whose
    ``geometry`` names the tags it came from)."""
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise InputError(
            f"{path}: its voxel-to-world matrix holds NaN or infinite values; {geometry} is broken."
        )
    spacing = np.linalg.norm(matrix, axis=0)
    if spacing.min() <= 0 or abs(np.linalg.det(matrix)) < 1e-6 * np.prod(spacing):
        raise InputError(
            f"{path}: its voxel-to-world matrix is singular (two axes point the same way or one "
            f"has zero length); {geometry} is broken."
        )
    if spacing.min() < MIN_VOXEL_MM or spacing.max() > MAX_VOXEL_MM:
        sizes = " x ".join(f"{s:.3g}" for s in spacing)
        raise InputError(
            f"{path}: voxel size {sizes} mm is outside any MRI's range ({MIN_VOXEL_MM}-"
            f"{MAX_VOXEL_MM} mm); {geometry} is wrong."
        )
