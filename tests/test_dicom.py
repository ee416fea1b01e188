"""DICOM series in, DICOM SEG out: series written here from synthetic and real volumes (random
file names without suffix, shuffled, oblique), read back with exact geometry, every refusal one
sentence with nothing written, and a SEG that highdicom reads back onto the source's voxels."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import napari_la_dinov2
from napari_la_dinov2.cli import main
from napari_la_dinov2.errors import InputError
from napari_la_dinov2.volume_files import VolumeMeta, is_supported_path, read_volume, write_labels
from tests.dicom_series import (
    LPS,
    oblique_affine,
    oblique_stored,
    series_datasets,
    write_files,
)


@pytest.fixture
def oblique(tmp_path):
    """An oblique series with a different RescaleSlope per slice: (folder, expected, affine)."""
    stored, slopes = oblique_stored(), 0.5 + 0.25 * np.arange(7)
    paths = write_files(
        tmp_path / "oblique", series_datasets(stored, oblique_affine(), slopes, -100)
    )
    return paths[0].parent, stored * slopes - 100.0, oblique_affine()


def _uid_of(folder: Path, description: str) -> str:
    headers = (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir())
    return next(h.SeriesInstanceUID for h in headers if h.SeriesDescription == description)


def _check_geometry_against_headers(volume, meta, folder: Path) -> None:
    """Every file's corner pixels: value and position by DICOM's own definition, voxel by voxel."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if ds.SeriesInstanceUID != meta.extra["series_uid"]:
            continue
        pixels = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        k = [k for k in range(volume.shape[2]) if np.array_equal(volume[:, :, k], pixels)]
        assert len(k) == 1, path
        ipp, iop = (
            np.array(ds.ImagePositionPatient, float),
            np.array(ds.ImageOrientationPatient, float),
        )
        row_spacing, col_spacing = (float(s) for s in ds.PixelSpacing)
        for i, j in [(0, 0), (ds.Columns - 1, 0), (0, ds.Rows - 1), (ds.Columns - 1, ds.Rows - 1)]:
            lps = ipp + i * col_spacing * iop[:3] + j * row_spacing * iop[3:]
            ras = (LPS @ [*lps, 1.0])[:3]
            np.testing.assert_allclose((meta.affine @ [i, j, k[0], 1.0])[:3], ras, atol=1e-4)


def test_oblique_series_reads_with_exact_geometry(oblique):
    folder, expected, affine = oblique
    assert is_supported_path(folder) and not is_supported_path(folder.parent / "nothing-here")
    assert not is_supported_path(next(folder.iterdir()))  # a lone slice (or SEG) is no volume
    volume, meta = read_volume(folder)
    assert volume.shape == (24, 18, 7) and volume.dtype == np.float32
    np.testing.assert_array_equal(volume, expected)  # each slice's own slope applied
    np.testing.assert_allclose(meta.affine, affine, atol=1e-4)
    assert meta.format == "dicom" and meta.source == str(folder)
    assert meta.through_plane_axis() == 2 and meta.is_oblique
    assert len(meta.extra["dicom_headers"]) == 7
    _check_geometry_against_headers(volume, meta, folder)
    np.testing.assert_allclose(meta.affine, _simpleitk_affine(folder), atol=1e-4)


def _simpleitk_affine(folder: Path) -> np.ndarray:
    """A second opinion: ITK's own geometry of the series (index order column, row, slice)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS @ affine


def test_enhanced_multiframe_file(tmp_path):
    import highdicom as hd

    stored = oblique_stored()
    datasets = series_datasets(stored, oblique_affine(), 0.5, -100)
    multiframe = hd.legacy.LegacyConvertedEnhancedMRImage(
        [datasets[k] for k in (3, 0, 6, 1, 5, 2, 4)],  # frames in no particular order
        series_instance_uid=generate_uid(),
        series_number=8,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    (tmp_path / "mf").mkdir()
    multiframe.save_as(tmp_path / "mf" / "IM0001")
    for path in (tmp_path / "mf", tmp_path / "mf" / "IM0001"):  # its folder, or the file itself
        volume, meta = read_volume(path)
        np.testing.assert_array_equal(volume, stored * 0.5 - 100.0)
        np.testing.assert_allclose(meta.affine, oblique_affine(), atol=1e-4)
    labels = np.zeros(meta.shape, np.uint8)
    labels[3:11, 2:9, 1:6] = 1
    mask, seg = _seg_mask(write_labels(tmp_path / "la.dcm", labels, meta), meta)
    np.testing.assert_array_equal(mask, labels)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == multiframe.SeriesInstanceUID


def test_two_series_are_listed_and_series_picks_one(oblique, tmp_path):
    folder, expected, affine = oblique
    other = np.random.default_rng(5).integers(0, 100, (16, 16, 5))
    second = series_datasets(other, np.diag([-0.625, -0.625, 1.25, 1.0]), description="T1 map")
    write_files(folder, second, seed=3)
    first_uid = _uid_of(folder, "LGE")
    with pytest.raises(InputError) as error:
        read_volume(folder)
    message = str(error.value)
    assert message.startswith(f"{folder} holds 2 DICOM image series: ")
    assert f"{second[0].SeriesInstanceUID} ('T1 map', 5 slices)" in message
    assert "('LGE', 7 slices)" in message and message.endswith("pick one with --series UID.")
    volume, meta = read_volume(folder, series_uid=second[0].SeriesInstanceUID)
    np.testing.assert_array_equal(volume, other)
    assert meta.extra["series_uid"] == second[0].SeriesInstanceUID != first_uid
    with pytest.raises(InputError, match=r"has no DICOM series 1\.2\.3; it holds .*T1 map"):
        read_volume(folder, series_uid="1.2.3")


def test_zip_with_a_subfolder(oblique, tmp_path):
    folder, expected, affine = oblique
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.iterdir():
            handle.write(path, f"PATIENT/STUDY/{path.name}")
    assert is_supported_path(archive)
    volume, meta = read_volume(archive)
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_allclose(meta.affine, affine, atol=1e-4)
    assert meta.source == str(archive)
    # The temporary folder is gone, but the SEG writer has what it needs in meta.
    labels = (volume > np.median(volume)).astype(np.uint8)
    mask, _ = _seg_mask(write_labels(tmp_path / "la.dcm", labels, meta), meta)
    np.testing.assert_array_equal(mask, labels)


@pytest.mark.parametrize("member", ["../evil", "/tmp/evil", "a/../../evil"])
def test_zip_slip_is_refused(member, tmp_path):
    archive = tmp_path / "inner" / "slip.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(member, b"x")
    with pytest.raises(InputError, match="points outside the archive"):
        read_volume(archive)
    assert not (tmp_path / "evil").exists()


def _seg_mask(path: Path, meta: VolumeMeta) -> tuple[np.ndarray, object]:
    """The SEG's frames put back on the source grid by their own ImagePositionPatient."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    mask = np.zeros(meta.shape, np.uint8)
    to_voxel = np.linalg.inv(meta.affine)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        lps = np.array(group.PlanePositionSequence[0].ImagePositionPatient, float)
        voxel = (to_voxel @ LPS @ [*lps, 1.0])[:3]
        np.testing.assert_allclose(voxel[:2], 0.0, atol=1e-4)  # frames start at a slice corner
        k = int(round(voxel[2]))
        assert abs(voxel[2] - k) < 1e-4
        mask[:, :, k] = frame.T
    return mask, seg


def test_seg_and_nifti_outputs_round_trip(oblique, tmp_path):
    folder, _, _ = oblique
    volume, meta = read_volume(folder)
    labels = np.zeros(meta.shape, np.uint8)
    labels[5:15, 4:12, 2:5] = 1
    labels[6, 5, 5] = 1
    out = write_labels(tmp_path / "la.dcm", labels, meta)
    mask, seg = _seg_mask(out, meta)
    np.testing.assert_array_equal(mask, labels)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == meta.extra["series_uid"]
    assert seg.StudyInstanceUID == meta.extra["study_uid"]
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Left atrium" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "82471001"
    assert segment.SegmentAlgorithmName == "napari-la-dinov2"
    assert seg.SegmentationType == "BINARY"
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    source = derivation.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert source in meta.extra["sop_instance_uids"]
    nifti = write_labels(tmp_path / "la.nii.gz", labels, meta)
    np.testing.assert_allclose(nib.load(nifti).affine, meta.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(nib.load(nifti).dataobj), labels)
    with pytest.raises(InputError, match="already exists"):
        write_labels(out, labels, meta)
    # A SEG saved into its series' folder is not a second series to choose from.
    out.rename(folder / "la-seg")
    np.testing.assert_array_equal(read_volume(folder)[0], volume)


def test_seg_and_series_need_a_dicom_source(tmp_path):
    meta = VolumeMeta.from_spacing((16, 16, 4))
    nifti = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(*meta.shape).astype(np.float32), meta.affine), nifti)
    with pytest.raises(InputError, match="is not DICOM; a series UID only picks a series"):
        read_volume(nifti, series_uid="1.2.3")
    nifti.unlink()
    with pytest.raises(InputError, match=r"a DICOM SEG \(\.dcm\) output needs a DICOM input"):
        write_labels(tmp_path / "mask.dcm", np.zeros(meta.shape, np.uint8), meta)
    assert list(tmp_path.iterdir()) == []


def _no_dicom(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here\n")
    return folder


def _single_image(folder: Path) -> Path:
    write_files(folder, series_datasets(oblique_stored(), oblique_affine())[:1])
    return folder


def _missing_slice(folder: Path) -> Path:
    datasets = series_datasets(oblique_stored(), oblique_affine())
    write_files(folder, datasets[:3] + datasets[4:])
    return folder


def _two_echoes(folder: Path) -> Path:
    datasets = series_datasets(oblique_stored(), oblique_affine())
    echo = series_datasets(oblique_stored(seed=2), oblique_affine())
    for ds in echo:
        ds.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    write_files(folder, datasets + echo)
    return folder


def _not_an_image(folder: Path) -> Path:
    ds = series_datasets(oblique_stored(), oblique_affine())[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    for name in ("Rows", "Columns", "PixelData", "ImagePositionPatient"):
        delattr(ds, name)
    write_files(folder, [ds])
    return folder


BAD_SERIES = {
    "no DICOM": (
        _no_dicom,
        r"holds no DICOM files; give a folder \(or \.zip\) with a DICOM MR series",
    ),
    "one 2D image": (_single_image, r"is a single 2D image; a 3D volume .* is needed"),
    "missing slice": (
        _missing_slice,
        r"uneven slice spacing: 5\.000 mm between slices 2 and 3 \(InstanceNumber 3 and 5\) "
        r"where the others are 2\.500 mm",
    ),
    "two echoes": (_two_echoes, "has 14 images at only 7 slice positions"),
    "not an image": (_not_an_image, "holds no DICOM image series to segment, only Basic Text SR"),
}


@pytest.mark.parametrize("case", list(BAD_SERIES))
def test_bad_series_one_sentence_nothing_written(case, tmp_path, capsys):
    make, expected = BAD_SERIES[case]
    folder = make(tmp_path / "in")
    with pytest.raises(InputError, match=expected):
        read_volume(folder)
    out = tmp_path / "out" / "la.dcm"
    assert main(["segment", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("la-dinov2: error: "), err
    assert not out.parent.exists()


def test_cli_dicom_folder_to_nifti_and_seg(oblique, tmp_path, foreground_checkpoint):
    folder, _, affine = oblique
    other = series_datasets(oblique_stored(seed=9), np.eye(4), description="other")
    write_files(folder, other, seed=9)
    uid = _uid_of(folder, "LGE")
    _, meta = read_volume(folder, series_uid=uid)
    common = ["--checkpoint", str(foreground_checkpoint), "--device", "cpu", "--series", uid]
    common += ["--roi", "4:20,3:15,1:6"]
    nifti, seg = tmp_path / "la.nii.gz", tmp_path / "la.dcm"
    assert main(["segment", str(folder), "--out", str(nifti), *common]) == 0
    assert main(["segment", str(folder), "--out", str(seg), *common]) == 0
    written = nib.load(nifti)
    np.testing.assert_allclose(written.affine, meta.affine, atol=1e-5)
    labels = np.asanyarray(written.dataobj)
    assert labels.sum() > 0
    mask, dataset = _seg_mask(seg, meta)
    np.testing.assert_array_equal(mask, labels)
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    # A .dcm output needs a DICOM input: refused before the model is loaded, nothing written.
    source = tmp_path / "source.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(written.dataobj, np.float32) * 50 + 1, affine), source)
    out = tmp_path / "never.dcm"
    assert main(["segment", str(source), "--out", str(out), "--checkpoint", "x"]) == 2
    assert not out.exists()


def test_a_nifti_job_does_not_load_the_dicom_stack(tmp_path):
    """SimpleITK and highdicom cost seconds to import: a plain NIfTI job must not pay it."""
    code = (
        "import sys, numpy as np, nibabel as nib\n"
        "from napari_la_dinov2.volume_files import is_supported_path, read_volume, write_labels\n"
        f"path = {str(tmp_path / 'a.nii.gz')!r}\n"
        "nib.save(nib.Nifti1Image(np.random.rand(16, 16, 4).astype('float32'), np.eye(4)), path)\n"
        "volume, meta = read_volume(path)\n"
        "assert is_supported_path(path)\n"
        f"write_labels({str(tmp_path / 'm.nii.gz')!r}, (volume > 0.5).astype('uint8'), meta)\n"
        "names = ('SimpleITK', 'highdicom', 'napari_la_dinov2.dicom')\n"
        "print([n for n in names if n in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(napari_la_dinov2.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.fixture(scope="module")
def real_dicom(real_data_dir, tmp_path_factory):
    """A real LA 2018 case written as a DICOM series: (folder, NIfTI path, NIfTI volume, meta)."""
    case = (real_data_dir / "cases.txt").read_text(encoding="utf-8").split()[0]
    nifti = real_data_dir / "images" / f"{case}.nii.gz"
    volume, meta = read_volume(nifti)
    folder = tmp_path_factory.mktemp("real") / case
    write_files(folder, series_datasets(volume.astype(np.uint16), meta.affine))
    return folder, nifti, volume, meta


@pytest.mark.realdata
def test_real_case_from_dicom_segments_like_the_nifti(real_dicom, tmp_path, capsys):
    """The CLI on the DICOM folder (to NIfTI and to SEG) against the Predictor on the NIfTI."""
    from napari_la_dinov2.inference import Predictor
    from napari_la_dinov2.models import load_model
    from napari_la_dinov2.scoring.metrics import dice

    folder, nifti, volume, meta = real_dicom
    dicom_volume, dicom_meta = read_volume(folder)
    np.testing.assert_array_equal(dicom_volume, volume)
    np.testing.assert_allclose(dicom_meta.affine, meta.affine, atol=1e-4)
    reference = Predictor(load_model("default"), device="cpu").predict(volume, meta)
    out_nifti, out_seg = tmp_path / "la.nii.gz", tmp_path / "la.dcm"
    for out in (out_nifti, out_seg):
        assert main(["segment", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    written = nib.load(out_nifti)
    np.testing.assert_allclose(written.affine, meta.affine, atol=1e-4)
    from_dicom = np.asanyarray(written.dataobj)
    assert dice(from_dicom, reference) >= 0.99
    mask, seg = _seg_mask(out_seg, dicom_meta)
    np.testing.assert_array_equal(mask, from_dicom)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dicom_meta.extra["series_uid"]
