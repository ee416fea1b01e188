"""DICOM MR series written from arrays for the tests: pydicom datasets with the per-slice tags a
scanner writes (MR Image Storage, one study/series/frame of reference UID, ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, SliceThickness, InstanceNumber, rescale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse


def _ds(value) -> str:
    return format_number_as_ds(float(value))  # DS strings hold at most 16 characters


def oblique_affine() -> np.ndarray:
    """RAS affine rotated about all three axes, with three different voxel sizes: a swap of rows
    and columns, or of a sign, cannot go unnoticed."""
    a, b = np.radians(25.0), np.radians(-40.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.5, 2.5])
    affine[:3, 3] = (12.5, -31.25, 47.0)
    return affine


def series_datasets(stored, affine_ras, slopes=1.0, intercept=0.0, description="LGE"):
    """One MR Image Storage dataset per slice of ``stored`` (column, row, slice) on ``affine``."""
    lps = LPS @ affine_ras
    col_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    # IOP: first along a row (the column index grows), then down a column (the row index grows).
    iop = [*(col_step / np.linalg.norm(col_step)), *(row_step / np.linalg.norm(row_step))]
    slopes = np.broadcast_to(np.asarray(slopes, dtype=float), (stored.shape[2],))
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(stored.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Test^Phantom", "LA0001"
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 7, k + 1
        ds.Manufacturer, ds.ImageType = "test", ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "3D", "2.2", "5.4"
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, 3] + k * slice_step]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        # PixelSpacing: (between rows, between columns).
        ds.PixelSpacing = [_ds(np.linalg.norm(row_step)), _ds(np.linalg.norm(col_step))]
        ds.SliceThickness = _ds(np.linalg.norm(slice_step))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slopes[k]), _ds(intercept)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T, dtype=np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def write_files(folder: Path, datasets, seed: int = 0) -> list[Path]:
    """Save in shuffled order under random names without a suffix, as PACS exports often are."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in rng.permutation(len(datasets)):
        path = folder / f"{rng.integers(16**10):010x}"
        datasets[index].save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def oblique_stored(shape=(24, 18, 7), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape)
