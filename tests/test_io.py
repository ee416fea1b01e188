"""Volumes in and out: exact geometry round trips, and one clear error per kind of bad file."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import nrrd
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.volume_files import (
    VolumeMeta,
    check_output_path,
    is_supported_path,
    read_labels,
    read_volume,
    write_labels,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine() -> np.ndarray:
    """Rotated about all three axes, axes permuted and flipped (not RAS), anisotropic."""
    rotation = Rotation.from_euler("xyz", [17, -31, 52], degrees=True).as_matrix()
    permute = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ permute @ np.diag([0.7, 0.625, 1.3])
    affine[:3, 3] = (-12.5, 33.1, 7.25)
    return affine


def image_data(shape=(24, 20, 9), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 100).astype(np.float32)


def save_nifti(path, data, affine, qform_code=1, sform_code=2):
    image = nib.Nifti1Image(data, None)
    if qform_code:
        image.set_qform(affine, code=qform_code)
    if sform_code:
        image.set_sform(affine, code=sform_code)
    nib.save(image, str(path))
    return path


def save_nrrd_lps(path, data, affine_ras):
    lps = LPS_TO_RAS @ affine_ras
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
    }
    nrrd.write(str(path), data, header)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_round_trip_each_format(tmp_path, suffix):
    meta = VolumeMeta.from_spacing((20, 16, 10), (0.625, 0.625, 1.25))
    labels = np.zeros(meta.shape, np.uint8)
    labels[4:12, 3:9, 2:7] = 1
    path = write_labels(tmp_path / f"mask{suffix}", labels, meta)
    assert path.name == f"mask{suffix}" and path.is_file()
    volume, read_meta = read_volume(path)
    np.testing.assert_array_equal(volume, labels.astype(np.float32))
    np.testing.assert_allclose(read_meta.affine, meta.affine, atol=1e-6)
    assert read_meta.spacing == pytest.approx((0.625, 0.625, 1.25))
    assert read_meta.format == ("nrrd" if suffix == ".nrrd" else "nifti")
    back = read_labels(path, image_meta=meta)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


@pytest.mark.parametrize(
    "codes", [(1, 2), (1, 0), (0, 1)], ids=["qform+sform", "qform-only", "sform-only"]
)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_oblique_non_ras_round_trips_exactly(tmp_path, codes, suffix):
    affine = oblique_affine()
    source = save_nifti(tmp_path / f"image{suffix}", image_data(), affine, *codes)
    volume, meta = read_volume(source)
    assert meta.is_oblique and meta.axcodes != ("R", "A", "S")
    labels = (volume > 50).astype(np.uint8)
    out = write_labels(tmp_path / f"labels{suffix}", labels, meta)

    src, written = nib.load(str(source)), nib.load(str(out))
    assert written.shape == src.shape and written.get_data_dtype() == np.uint8
    assert np.array_equal(written.affine, src.affine)  # bit for bit
    for getter in ("get_qform", "get_sform"):
        src_matrix, src_code = getattr(src.header, getter)(coded=True)
        out_matrix, out_code = getattr(written.header, getter)(coded=True)
        assert out_code == src_code
        assert (src_matrix is None and out_matrix is None) or np.array_equal(src_matrix, out_matrix)
    np.testing.assert_array_equal(read_labels(out, image_meta=meta), labels)


def test_nrrd_lps_oblique_round_trips(tmp_path):
    affine = oblique_affine()
    source = save_nrrd_lps(tmp_path / "image.nrrd", image_data(), affine)
    volume, meta = read_volume(source)
    np.testing.assert_allclose(meta.affine, affine, atol=1e-9)  # LPS converted to RAS
    assert meta.spacing == pytest.approx((0.7, 0.625, 1.3))
    labels = (volume > 50).astype(np.uint8)

    out = write_labels(tmp_path / "labels.nrrd", labels, meta)
    data, header = nrrd.read(str(out))
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(
        np.asarray(header["space directions"]), (LPS_TO_RAS @ affine)[:3, :3].T, atol=1e-9
    )
    assert data.dtype == np.uint8 and np.array_equal(data, labels)
    np.testing.assert_allclose(read_volume(out)[1].affine, affine, atol=1e-9)

    # The same NRRD geometry written as NIfTI: equal to NIfTI's float32 precision.
    as_nifti = write_labels(tmp_path / "labels.nii.gz", labels, meta)
    np.testing.assert_allclose(nib.load(str(as_nifti)).affine, affine, atol=1e-5)


def test_nan_voxels_become_the_lowest_finite_value(tmp_path):
    data = image_data()
    data[0, 0, :3] = (np.nan, np.inf, -np.inf)
    volume, _ = read_volume(save_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))
    assert np.isfinite(volume).all()
    assert volume[0, 0, 0] == volume[0, 0, 1] == np.nanmin(np.where(np.isinf(data), np.nan, data))


def test_singleton_fourth_axis_is_read_as_3d(tmp_path):
    data = image_data()[..., None]
    volume, meta = read_volume(save_nifti(tmp_path / "t1.nii.gz", data, np.eye(4)))
    assert volume.shape == meta.shape == (24, 20, 9)


@pytest.mark.parametrize("frames", [1, 3])
def test_nrrd_list_axis_is_the_fourth_axis(tmp_path, frames):
    # NRRD keeps a non-spatial (list/time) axis first, with a 'none' space direction.
    data = np.random.default_rng(0).random((frames, 20, 18, 9)).astype(np.float32)
    header = {
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": [[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]],
        "space origin": [0.0, 0.0, 0.0],
    }
    path = tmp_path / "series.nrrd"
    nrrd.write(str(path), data, header)
    if frames == 1:
        volume, meta = read_volume(path)
        assert volume.shape == (20, 18, 9) and meta.spacing == pytest.approx((1, 1, 2))
        np.testing.assert_array_equal(volume, data[0])
    else:
        with pytest.raises(InputError, match="series.nrrd is a 4D series with 3 frames"):
            read_volume(path)


def _bad_files(tmp) -> dict[str, tuple]:
    """name -> (path, a phrase the message must contain). Built fresh in ``tmp``."""
    ok = save_nifti(tmp / "ok.nii.gz", image_data(), np.eye(4))
    raw = gzip.decompress(ok.read_bytes())
    files = {}
    files["missing"] = (tmp / "missing.nii.gz", "no such file")
    (tmp / "folder.nii.gz").mkdir()
    files["directory"] = (tmp / "folder.nii.gz", "folder")
    (tmp / "empty.nii.gz").write_bytes(b"")
    files["empty"] = (tmp / "empty.nii.gz", "empty")
    (tmp / "truncated.nii.gz").write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    files["truncated"] = (tmp / "truncated.nii.gz", "truncated")
    (tmp / "notes.nii").write_text("this is a text file, not an image\n" * 20)
    files["not an image"] = (tmp / "notes.nii", "not an image")
    files["2D"] = (save_nifti(tmp / "flat.nii.gz", image_data((20, 20)), np.eye(4)), "2D")
    files["4D"] = (
        save_nifti(tmp / "series.nii.gz", image_data((20, 20, 8, 3)), np.eye(4)),
        "4D series with 3 frames",
    )
    files["all NaN"] = (
        save_nifti(tmp / "nan.nii.gz", np.full((20, 20, 8), np.nan, np.float32), np.eye(4)),
        "no finite values",
    )
    files["constant"] = (
        save_nifti(tmp / "constant.nii.gz", np.full((20, 20, 8), 7, np.float32), np.eye(4)),
        "same value",
    )
    files["single voxel"] = (
        save_nifti(tmp / "voxel.nii.gz", np.ones((1, 1, 1), np.float32), np.eye(4)),
        "too small",
    )
    corrupt = bytearray(raw)
    corrupt[70:72] = b"\xff\x0f"  # NIfTI datatype code: no such type
    (tmp / "header.nii").write_bytes(bytes(corrupt))
    files["unreadable NIfTI header"] = (tmp / "header.nii", "could not be read")
    (tmp / "header.nrrd").write_text(
        "NRRD0004\ntype: float\ndimension: three\nsizes: 2 2\nencoding: raw\n\n"
    )
    files["unreadable NRRD header"] = (tmp / "header.nrrd", "could not be read")
    (tmp / "magic.nrrd").write_bytes(b"\x00\x01garbage" * 30)
    files["not NRRD"] = (tmp / "magic.nrrd", "could not be read")
    (tmp / "image.png").write_bytes(b"\x89PNG....")
    files["unsupported suffix"] = (tmp / "image.png", "unsupported file type")
    return files


def test_every_bad_input_is_one_clear_input_error(tmp_path):
    files = _bad_files(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for kind, (path, phrase) in files.items():
        with pytest.raises(InputError) as caught:
            read_volume(path)
        message = str(caught.value)
        assert path.name in message, kind
        assert phrase in message, (kind, message)
        assert "\n" not in message, kind
        if kind not in ("constant", "all NaN", "single voxel"):  # masks may be empty/constant
            with pytest.raises(InputError, match=path.name):
                read_labels(path)
    assert sorted(os.listdir(tmp_path)) == before  # reading never writes


def test_existing_output_is_never_overwritten_unless_asked(tmp_path):
    meta = VolumeMeta.from_spacing((16, 16, 4))
    first = np.zeros(meta.shape, np.uint8)
    first[2:6, 2:6, 1] = 1
    out = write_labels(tmp_path / "mask.nii.gz", first, meta)
    stamp = out.read_bytes()
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        write_labels(out, 1 - first, meta)
    with pytest.raises(InputError, match="already exists"):
        check_output_path(out)
    assert out.read_bytes() == stamp
    write_labels(out, 1 - first, meta, overwrite=True)
    np.testing.assert_array_equal(read_labels(out), 1 - first)


def test_bad_writes_leave_nothing_behind(tmp_path, monkeypatch):
    meta = VolumeMeta.from_spacing((16, 16, 4))
    with pytest.raises(InputError, match="shape"):
        write_labels(tmp_path / "wrong.nii.gz", np.zeros((16, 16, 5), np.uint8), meta)
    with pytest.raises(InputError, match="0 to 255"):
        write_labels(tmp_path / "neg.nii.gz", -np.ones(meta.shape, np.int16), meta)
    with pytest.raises(InputError, match=r"\.nii\.gz, \.nii or \.nrrd"):
        write_labels(tmp_path / "mask.png", np.zeros(meta.shape, np.uint8), meta)
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(InputError, match="dir.nii.gz is a folder"):
        check_output_path(tmp_path / "dir.nii.gz", overwrite=True)
    (tmp_path / "dir.nii.gz").rmdir()

    def fail_half_way(image, filename):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_labels(tmp_path / "mask.nii.gz", np.zeros(meta.shape, np.uint8), meta)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_is_supported_path():
    assert all(is_supported_path(p) for p in ("a.nii", "b.NII.GZ", "c.nrrd", "d.nhdr"))
    assert not any(is_supported_path(p) for p in ("a.png", "b.gz", "c"))


def test_meta_geometry_helpers():
    meta = VolumeMeta(affine=oblique_affine(), shape=(24, 20, 9))
    assert meta.spacing == pytest.approx((0.7, 0.625, 1.3))
    assert meta.through_plane_axis() == 2 and meta.is_oblique
    iso = VolumeMeta.from_spacing((8, 8, 8), (1.0, 1.0, 1.0))
    assert iso.axcodes == ("R", "A", "S") and not iso.is_oblique
    assert iso.through_plane_axis() == 2
    assert VolumeMeta.from_spacing((8, 8, 8), (2.5, 1.0, 1.0)).through_plane_axis() == 0


def test_real_case_round_trip(real_data_dir, real_case_ids, tmp_path):
    case = real_case_ids[0]
    image_path = real_data_dir / "images" / f"{case}.nii.gz"
    label_path = real_data_dir / "labels" / f"{case}.nii.gz"
    volume, meta = read_volume(image_path)
    assert volume.ndim == 3 and volume.dtype == np.float32
    assert meta.spacing == pytest.approx((0.625, 0.625, 1.25), abs=1e-4)
    assert meta.through_plane_axis() == 2
    truth = read_labels(label_path, image_meta=meta)
    assert set(np.unique(truth)) == {0, 1}

    out = write_labels(tmp_path / f"{case}.nii.gz", truth, meta)
    written, source = nib.load(str(out)), nib.load(str(label_path))
    assert written.shape == source.shape
    assert np.array_equal(written.affine, nib.load(str(image_path)).affine)
    np.testing.assert_array_equal(read_labels(out, image_meta=meta), truth)
    out_nrrd = write_labels(tmp_path / f"{case}.nrrd", truth, meta)
    back, back_meta = read_labels(out_nrrd, image_meta=meta), read_volume(out_nrrd)[1]
    np.testing.assert_array_equal(back, truth)
    np.testing.assert_allclose(back_meta.affine, meta.affine, atol=1e-6)
