"""DICOM SEG out: a left-atrium mask written back as a BINARY Segmentation of its source series,
so it opens on its MR images in a PACS, 3D Slicer or OHIF.

The writer needs the source's pixel-less headers, which :func:`napari_la_dinov2.dicom.read_dicom`
keeps in ``meta.extra["dicom_headers"]`` (in slice order). highdicom is imported lazily.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from .errors import InputError
from .outputs import OutputGroup, atomic_write
from .volume import VolumeMeta

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_seg(
    path: Path,
    labels: np.ndarray,
    meta: VolumeMeta,
    *,
    overwrite: bool = True,
    group: OutputGroup | None = None,
) -> Path:
    """Write ``labels`` (non-zero = left atrium) as a BINARY DICOM SEG of ``meta``'s series,
    atomically (or staged in ``group``); ``path`` is already checked by
    :func:`~napari_la_dinov2.volume_files.write_labels`."""
    import highdicom as hd

    headers = meta.extra.get("dicom_headers")
    if meta.format != "dicom" or not headers:
        raise InputError(
            f"{path}: a DICOM SEG (.dcm) can only be written for an image read from DICOM; "
            "write .nii.gz or .nrrd instead."
        )
    # The mask as a highdicom volume, (slice, row, column) in LPS: highdicom matches each of its
    # planes to the source frame at the same position and references it.
    volume = hd.Volume(
        array=(np.asarray(labels) > 0).astype(np.uint8).transpose(2, 1, 0),
        affine=(_LPS_TO_RAS @ meta.affine)[:, [2, 1, 0, 3]],
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(headers[0].FrameOfReferenceUID),
    )
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=volume,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description()],
        series_instance_uid=hd.UID(),
        series_number=_seg_series_number(headers[0]),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-la-dinov2",
        manufacturer_model_name="napari-la-dinov2",
        software_versions=_version(),
        device_serial_number="0",
        content_label="LEFT_ATRIUM",
        content_description="Left atrium, napari-la-dinov2",
        # An empty mask still makes a valid SEG (with empty frames) rather than an error.
        omit_empty_frames=bool(np.any(labels)),
    )
    seg.SeriesDescription = "Left atrium (napari-la-dinov2)"
    save = partial(seg.save_as, enforce_file_format=True)
    atomic_write(path, save, overwrite=overwrite, group=group)
    return path


def _segment_description():
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Left atrium",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.LeftAtrium,  # SCT 82471001
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="napari-la-dinov2",
            family=codes.cid7162.ArtificialIntelligence,
            version=_version(),
        ),
    )


def _seg_series_number(source) -> int:
    # Beside its source in a PACS viewer: the source's series number plus 1000, a common habit.
    try:
        return int(source.get("SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def _version() -> str:
    from ._version import __version__

    return __version__
