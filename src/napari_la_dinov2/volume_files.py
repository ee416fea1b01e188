"""Read LGE-MRI volumes with their geometry and write label volumes back.

``read_volume`` returns ``(array, meta)``; ``write_labels`` takes the same ``meta`` so a mask
lands on exactly the voxels of its image (the nnU-Net reader/writer contract). The array is
never re-oriented: array axis *i* is voxel axis *i* of the file, and ``meta.affine`` maps voxel
indices to RAS millimetres. NRRD's LPS space is converted to RAS on read and back on write.

Every problem with a file becomes one :class:`~napari_la_dinov2.errors.InputError` sentence that
names the file; nothing is written unless the whole output is ready (write to a temporary file
in the same folder, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

# Output helpers lived here before outputs.py; importers of default_permissions from here still work.
from .outputs import OutputGroup, atomic_write, check_output_path
from .outputs import default_permissions as default_permissions
from .volume import MIN_INPLANE_VOXELS, VolumeMeta, check_content  # noqa: F401 (re-exported)
from .volume_file_checks import check_geometry, check_nifti_header, check_nrrd_header

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES
# What case_name strips: every volume suffix, and the zip or file of a DICOM series.
_CASE_SUFFIXES = (*SUPPORTED_SUFFIXES, ".zip", ".dcm")
# What a mask may be written as; ".dcm" (a DICOM SEG) only for an image read from DICOM.
MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".dcm")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def case_name(path: str | os.PathLike) -> str:
    """The case a path names: the file name without its suffix (``/a/case01.nii.gz`` ->
    ``case01``, ``study.zip`` -> ``study``) or a DICOM folder's own name."""
    name = Path(path).name
    for suffix in sorted(_CASE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def is_supported_path(path: str | os.PathLike) -> bool:
    """A NIfTI/NRRD file, a .zip or a folder holding DICOM files (read_volume also takes a
    multi-frame DICOM file, but a lone .dcm here could be a SEG in a folder of masks)."""
    if _suffix(Path(path)) in SUPPORTED_SUFFIXES:
        return True
    from .dicom import looks_like_dicom

    return looks_like_dicom(path)


def _is_dicom_input(path: Path) -> bool:
    # Folders and zips are always DICOM here, so their errors speak of DICOM, not of suffixes.
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
        return True
    if not path.is_file() or _suffix(path) in SUPPORTED_SUFFIXES:
        return False
    from .dicom import is_dicom_file

    return is_dicom_file(path)


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a .nii, .nii.gz or .nrrd file.")
    if _suffix(path) not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type '{_suffix(path) or 'none'}'; "
            "give a .nii, .nii.gz or .nrrd file."
        )
    if not path.is_file():  # reading a FIFO would wait forever for a writer
        raise InputError(f"{path} is not a regular file (a pipe or a device); give a file.")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); the file was not saved completely.")


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nibabel as nib

    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path} is not a NIfTI image.")
    check_nifti_header(path, image)  # before the voxels are read: the claim must be possible
    header = image.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    extra = {
        "qform": None if qform is None else np.asarray(qform, dtype=np.float64),
        "qform_code": int(qcode),
        "sform": None if sform is None else np.asarray(sform, dtype=np.float64),
        "sform_code": int(scode),
        "xyzt_units": header.get_xyzt_units(),
    }
    data = np.asanyarray(image.dataobj)
    return data, np.asarray(image.affine, dtype=np.float64), extra


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nrrd

    check_nrrd_header(path, nrrd.read_header(str(path)))  # the data file, the claimed size
    data, header = nrrd.read(str(path))
    ndim_space = int(header.get("space dimension", 3) or 3)
    directions = header.get("space directions")
    origin = header.get("space origin")
    affine = np.eye(4)
    if directions is not None:
        # pynrrd gives one row per axis, NaN rows for non-spatial axes (e.g. a list of channels).
        rows = [np.asarray(r, dtype=float) for r in directions]
        spatial = [r for r in rows if r is not None and np.all(np.isfinite(r))]
        if len(spatial) == 3 and ndim_space == 3:
            affine[:3, :3] = np.stack(spatial, axis=1)
        others = [i for i, r in enumerate(rows) if not np.all(np.isfinite(r))]
        if data.ndim == 4 and len(others) == 1:
            # NRRD stores a list/time axis first; move it last, where NIfTI keeps its 4th axis,
            # so a singleton is read as 3D and a true series is refused with its frame count.
            data = np.moveaxis(data, others[0], -1)
    elif "spacings" in header:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"][:3]])
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, dtype=float)[:3]
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = _LPS_TO_RAS @ affine
    elif space not in ("right-anterior-superior", "ras"):
        raise InputError(f"{path}: NRRD space '{space}' is not supported; use RAS or LPS.")
    return data, affine, {"nrrd_space": space}


def read_volume(
    path: str | os.PathLike, series_uid: str | None = None
) -> tuple[np.ndarray, VolumeMeta]:
    """Read a 3D volume: ``(array float32 XYZ as stored, meta)``.

    A folder or .zip holding a DICOM series (or one multi-frame DICOM file) is read by
    :func:`napari_la_dinov2.dicom.read_dicom`; ``series_uid`` picks one of several series.
    A 4D file whose fourth axis has length 1 is read as 3D; a true 4D series (several time
    points or channels) is refused, because which frame to segment is the user's choice.
    NaN/inf voxels are set to the lowest finite value. Raises InputError for anything unusable.
    """
    path = Path(path).expanduser()
    if _is_dicom_input(path):
        from .dicom import read_dicom

        return read_dicom(path, series_uid=series_uid)
    if series_uid is not None:
        raise InputError(
            f"{path} is not DICOM; a series UID only picks a series in a DICOM folder."
        )
    _check_input_path(path)
    fmt = "nrrd" if _suffix(path) in NRRD_SUFFIXES else "nifti"
    try:
        data, affine, extra = _read_nrrd(path) if fmt == "nrrd" else _read_nifti(path)
        data = np.asarray(data)
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as error:  # nibabel/pynrrd/zlib raise many types for corrupt files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{path} could not be read as {fmt.upper()} ({reason}); the file is truncated, "
            "corrupt or not an image."
        ) from error
    data = _as_3d(data, path)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{path} holds {data.dtype} voxels; a real-valued image is needed.")
    volume = data.astype(np.float32, copy=False)
    check_content(volume, path)
    check_geometry(affine, path)
    meta = VolumeMeta(affine=affine, shape=volume.shape, source=str(path), format=fmt, extra=extra)
    return volume, meta


def _as_3d(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputError(
            f"{path} is a 4D series with {data.shape[3]} frames; this tool segments one 3D "
            "volume: save the frame to segment as its own file."
        )
    if data.ndim < 3 or (data.ndim == 3 and min(data.shape) == 0):
        raise InputError(
            f"{path} is a {data.ndim}D image of shape {data.shape}; a 3D volume is needed."
        )
    if data.ndim > 4:
        raise InputError(f"{path} has {data.ndim} dimensions; a 3D volume is needed.")
    return data


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    meta: VolumeMeta,
    overwrite: bool = False,
    *,
    group: OutputGroup | None = None,
) -> Path:
    """Write a label volume (uint8) on the grid of ``meta``: same shape, same affine.

    A ``.dcm`` path writes a DICOM SEG of the source series (``meta`` from a DICOM read). With
    a ``group`` the file is staged there and appears when the group is committed."""
    check_mask_output(path, meta)
    suffixes = MASK_SUFFIXES if meta.format == "dicom" else MASK_SUFFIXES[:-1]
    path = check_output_path(path, overwrite, suffixes=suffixes)
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(meta.shape):
        raise InputError(
            f"the mask has shape {labels.shape} but its image has shape {tuple(meta.shape)}; "
            "a mask must be on its image's grid."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InputError("labels must be integers from 0 to 255 to be saved as uint8.")
    labels = labels.astype(np.uint8)
    if path.name.lower().endswith(".dcm"):
        from .dicom_seg import write_seg

        write_seg(path, labels, meta, overwrite=overwrite, group=group)
    else:
        _write_on_grid(path, labels, meta, overwrite, group)
    return path


def write_map(path, values: np.ndarray, meta: VolumeMeta, overwrite: bool = False, *, group=None):
    """Write a float32 map (e.g. the model's doubt) on the grid of ``meta``, as NIfTI or NRRD."""
    path = check_output_path(path, overwrite, role="map", noun="map")
    if tuple(np.shape(values)) != tuple(meta.shape):
        raise InputError(f"the map has shape {np.shape(values)}, its image {tuple(meta.shape)}.")
    _write_on_grid(path, np.asarray(values, dtype=np.float32), meta, overwrite, group)
    return path


def _write_on_grid(path: Path, data: np.ndarray, meta: VolumeMeta, overwrite, group) -> None:
    if _suffix(path) in NRRD_SUFFIXES:
        atomic_write(
            path, lambda tmp: _write_nrrd(tmp, data, meta), overwrite=overwrite, group=group
        )
    else:
        atomic_write(
            path, lambda tmp: _write_nifti(tmp, data, meta), overwrite=overwrite, group=group
        )


def check_mask_output(path: str | os.PathLike, meta: VolumeMeta) -> None:
    """A DICOM SEG output needs a DICOM source to reference, with a frame of reference to place
    it in: refuse it early otherwise (before any model work)."""
    if str(path).lower().endswith(".dcm") and meta.format != "dicom":
        raise InputError(
            f"{path}: a DICOM SEG (.dcm) output needs a DICOM input series; this image was read "
            f"from {meta.format.upper()}, so write .nii.gz or .nrrd instead."
        )
    headers = meta.extra.get("dicom_headers") or []
    if (
        str(path).lower().endswith(".dcm")
        and headers
        and not all(str(h.get("FrameOfReferenceUID", "") or "") for h in headers)
    ):
        raise InputError(
            f"{path}: the series {meta.extra.get('series_uid', '')} has no FrameOfReferenceUID, "
            "so a DICOM SEG cannot be placed on it; write .nii.gz or .nrrd instead."
        )


def _write_nifti(tmp: Path, labels: np.ndarray, meta: VolumeMeta) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(labels, meta.affine)
    extra = meta.extra
    if "sform_code" in extra:  # a NIfTI source: mirror its qform and sform exactly
        qform = extra["qform"] if extra["qform"] is not None else meta.affine
        sform = extra["sform"] if extra["sform"] is not None else meta.affine
        image.set_qform(qform, code=extra["qform_code"])
        image.set_sform(sform, code=extra["sform_code"])
        image.header.set_xyzt_units(*extra["xyzt_units"])
    else:
        image.set_qform(meta.affine, code=1)
        image.set_sform(meta.affine, code=1)
        image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(labels.dtype)
    # nibabel picks the writer from the name, so the temporary file keeps the real suffix.
    nib.save(image, str(tmp))


def _write_nrrd(tmp: Path, labels: np.ndarray, meta: VolumeMeta) -> None:
    import nrrd

    lps = _LPS_TO_RAS @ meta.affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    nrrd.write(str(tmp), labels, header)


def read_labels(path: str | os.PathLike, image_meta: VolumeMeta | None = None) -> np.ndarray:
    """Read a mask file; with ``image_meta``, check it lies on the image's grid."""
    return read_labels_with_meta(path, image_meta)[0]


def read_labels_with_meta(
    path: str | os.PathLike, image_meta: VolumeMeta | None = None
) -> tuple[np.ndarray, VolumeMeta]:
    """:func:`read_labels` plus the mask file's own geometry (affine in RAS, as for images)."""
    path = Path(path).expanduser()
    _check_input_path(path)
    fmt = "nrrd" if _suffix(path) in NRRD_SUFFIXES else "nifti"
    try:
        data, affine, extra = _read_nrrd(path) if fmt == "nrrd" else _read_nifti(path)
        data = np.asarray(data)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{path} could not be read as a mask ({error}).") from error
    data = _as_3d(data, path)
    check_geometry(affine, path)  # the same rules as an image's: a mesh in mm depends on them
    if image_meta is not None:
        if tuple(data.shape) != tuple(image_meta.shape):
            raise InputError(
                f"{path} has shape {data.shape} but its image has shape "
                f"{tuple(image_meta.shape)}; the mask must be on the image's grid."
            )
        if not np.allclose(affine, image_meta.affine, atol=1e-3):
            raise InputError(f"{path} is not aligned with its image (different affine).")
    meta = VolumeMeta(affine=affine, shape=data.shape, source=str(path), format=fmt, extra=extra)
    return data, meta
