"""Hostile DICOM: every tag the reader uses, corrupted in turn, in every slice or in one, run
through `segment` to NIfTI and to SEG; stray files beside a good series; damaged zips and bombs.

Each refusal keeps the command line's contract (exit 2, one stderr line, the folders unchanged)
and comes before the model is loaded (:func:`no_model_load` turns a load into a failure).
"""

from __future__ import annotations

import re
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

import napari_la_dinov2.dicom_zip as dicom_zip
from napari_la_dinov2.cli import main
from napari_la_dinov2.errors import InputError
from napari_la_dinov2.volume_files import read_volume
from tests.dicom_corruptions import (
    CORRUPTIONS,
    broken_series,
    good_series,
    jpeg_series,
    truncated_file_series,
)
from tests.dicom_series import oblique_affine, oblique_stored, series_datasets, write_files
from tests.test_hostile import refused

BROKEN = [(name, where) for name in CORRUPTIONS for where in ("all", "one")]


def _refused_both_ways(source: Path, tmp_path: Path, capfd, expected: str) -> None:
    """`segment` to a NIfTI mask and to a DICOM SEG: both refused, the same way."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("la.nii.gz", "la.dcm"):
        argv = ["segment", source, "--out", out / name, "--checkpoint", "any"]
        err = refused(argv, capfd, out, source)
        assert re.search(expected, err), err


@pytest.mark.parametrize("name, where", BROKEN, ids=[f"{n} ({w})" for n, w in BROKEN])
def test_broken_series_is_refused_before_the_model(name, where, tmp_path, capfd, no_model_load):
    edit, expected = CORRUPTIONS[name]
    source = broken_series(tmp_path / "in", edit, where)
    _refused_both_ways(source, tmp_path, capfd, expected)


@pytest.mark.parametrize("where", ["all", "one"])
def test_truncated_files_are_refused(where, tmp_path, capfd, no_model_load):
    source = truncated_file_series(tmp_path / "in", where)
    _refused_both_ways(source, tmp_path, capfd, r"bytes of pixel data where its header")


def test_corrupt_jpeg_series_is_one_line(tmp_path, capfd, no_model_load):
    """libjpeg writes a line per error on file descriptor 2 (16 here): none may reach it."""
    folder, expected = jpeg_series(tmp_path / "good", corrupt=False)
    np.testing.assert_array_equal(read_volume(folder)[0], expected)  # the codec works
    source, _ = jpeg_series(tmp_path / "in", corrupt=True)
    _refused_both_ways(source, tmp_path, capfd, r"pixel data could not be decoded")


def test_generated_cases_are_many():
    assert len(BROKEN) + 2 >= 80


def _stray_files(folder: Path) -> list[str]:
    """Beside the good series: a file that is not DICOM past its preamble, a PALETTE COLOR
    image without its table, and an image whose PixelSpacing is text (each its own series)."""
    (folder / "garbage").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    palette, text = series_datasets(oblique_stored((16, 12, 2), seed=4), np.eye(4))
    palette.PhotometricInterpretation = "PALETTE COLOR"
    palette.SeriesInstanceUID = pydicom.uid.generate_uid()
    palette["PixelData"].VR = "OW"
    text["PixelSpacing"] = pydicom.DataElement(0x00280030, "LO", "0.7mm")
    text["PixelData"].VR = "OW"
    palette.save_as(folder / "palette", enforce_file_format=True)
    text.save_as(folder / "text-spacing", enforce_file_format=True)
    return ["garbage", "palette", "text-spacing"]


def test_good_series_with_stray_files(tmp_path, capfd, foreground_checkpoint):
    folder, expected = good_series(tmp_path / "export")
    strays = _stray_files(folder)
    volume, meta = read_volume(folder)
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_allclose(meta.affine, oblique_affine(), atol=1e-4)
    notes = " | ".join(meta.extra["read_warnings"])
    assert "skipped garbage (" in notes
    assert "file palette) was set aside" in notes and "file text-spacing) was set aside" in notes
    out = tmp_path / "la.nii.gz"
    argv = [
        "segment",
        folder,
        "--out",
        out,
        "--checkpoint",
        foreground_checkpoint,
        "--device",
        "cpu",
    ]
    assert main([str(a) for a in argv]) == 0
    err = capfd.readouterr().err
    assert out.exists() and "warning: skipped garbage (" in err, err
    assert all(name in err for name in strays[1:]), err


def test_a_stray_file_is_named_when_the_series_is_refused(tmp_path, capfd, no_model_load):
    """The series itself is broken (a missing slice): the one line also names the stray file."""
    datasets = series_datasets(oblique_stored((16, 12, 5)), oblique_affine())
    folder = tmp_path / "in"
    write_files(folder, datasets[:2] + datasets[3:])
    (folder / "garbage").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    _refused_both_ways(folder, tmp_path, capfd, r"uneven slice spacing.*could not be read: garbage")


def test_series_without_frame_of_reference(tmp_path, capfd, no_model_load):
    datasets = series_datasets(oblique_stored((16, 12, 5)), oblique_affine())
    for ds in datasets:
        del ds.FrameOfReferenceUID
    folder = tmp_path / "in"
    write_files(folder, datasets)
    assert read_volume(folder)[0].shape == (16, 12, 5)  # a NIfTI mask needs no frame of reference
    out = tmp_path / "out"
    out.mkdir()
    refused(
        ["segment", folder, "--out", out / "la.dcm", "--checkpoint", "any"],
        capfd,
        out,
        message="has no FrameOfReferenceUID",
    )


# --- Zips: damaged, encrypted, lying about their sizes, bombs ---------------------------------


def _zip_of_series(tmp_path: Path, compression=zipfile.ZIP_STORED) -> Path:
    folder, _ = good_series(tmp_path / "series")
    archive = tmp_path / "in" / "export.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", compression) as handle:
        for path in sorted(folder.iterdir()):
            handle.write(path, f"DICOM/{path.name}")
    return archive


def _patch_headers(archive: Path, edit) -> None:
    """``edit(data, local_offset, central_offset)`` on the first member's two headers."""
    data = bytearray(archive.read_bytes())
    edit(data, data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02"))
    archive.write_bytes(bytes(data))


def _crc_error(archive: Path) -> None:
    def edit(data, local, _central):
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        data[local + 30 + name_length + extra_length + 200] ^= 0xFF  # a pixel byte

    _patch_headers(archive, edit)


def _encrypted(archive: Path) -> None:
    def edit(data, local, central):
        data[local + 6] |= 1  # general purpose flag bit 0: encrypted
        data[central + 8] |= 1

    _patch_headers(archive, edit)


def _understated(archive: Path) -> None:
    def edit(data, local, central):
        struct.pack_into("<I", data, local + 22, 100)  # uncompressed size
        struct.pack_into("<I", data, central + 24, 100)

    _patch_headers(archive, edit)


def _cut(archive: Path) -> None:
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, compression, expected",
    [
        # Stored: a flipped byte fails the CRC only (deflated, it may break the stream first).
        (_crc_error, zipfile.ZIP_STORED, r"cannot be extracted \(Bad CRC-32"),
        (_crc_error, zipfile.ZIP_DEFLATED, r"cannot be extracted \((Bad CRC-32|Error -3)"),
        (_encrypted, zipfile.ZIP_DEFLATED, r"cannot be extracted \(.*encrypted"),
        (_understated, zipfile.ZIP_DEFLATED, r"cannot be extracted \(Bad CRC-32"),
        (_cut, zipfile.ZIP_DEFLATED, r"is not a readable zip file"),
    ],
    ids=[
        "CRC error",
        "deflate stream error",
        "encrypted member",
        "understated size",
        "cut in half",
    ],
)
def test_damaged_zip_is_one_sentence(damage, compression, expected, tmp_path, capfd, no_model_load):
    archive = _zip_of_series(tmp_path, compression)
    damage(archive)
    _refused_both_ways(archive, tmp_path, capfd, expected)


class _MeasuredTemporaryDirectory(tempfile.TemporaryDirectory):
    """Records how many bytes its folder holds when it is removed: all that was written."""

    peaks: list[int] = []

    def cleanup(self):
        held = sum(p.stat().st_size for p in Path(self.name).rglob("*") if p.is_file())
        self.peaks.append(held)
        super().cleanup()


def _bomb(path: Path, size: int, declared: int | None = None) -> Path:
    """``size`` zero bytes in one deflated member (a few KiB on disk); ``declared`` lies about
    its size in both headers."""
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
        with handle.open("IM0001", "w", force_zip64=True) as member:
            for _ in range(size // 2**20):
                member.write(b"\0" * 2**20)
    if declared is not None:
        data = bytearray(path.read_bytes())
        local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
        # ZIP64: the true sizes sit in the extra fields; make both headers claim ``declared``.
        for start, sizes_at in ((local, 22), (central, 24)):
            struct.pack_into("<I", data, start + sizes_at, declared)
        for extra in re.finditer(rb"\x01\x00[\x08\x10\x18]\x00", bytes(data)):
            struct.pack_into("<Q", data, extra.end(), declared)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("declared", [None, 2**20], ids=["honest sizes", "understated sizes"])
def test_zip_bomb_writes_no_more_than_the_limit(
    declared, tmp_path, capfd, monkeypatch, no_model_load
):
    limit = 4 * 2**20
    monkeypatch.setattr(dicom_zip, "MAX_UNZIPPED_BYTES", limit)
    monkeypatch.setattr(dicom_zip.tempfile, "TemporaryDirectory", _MeasuredTemporaryDirectory)
    _MeasuredTemporaryDirectory.peaks = []
    bomb = _bomb(tmp_path / "in" / "bomb.zip", 64 * 2**20, declared)
    assert bomb.stat().st_size < 2**20  # 64 MiB of zeros in well under 1 MiB
    out = tmp_path / "out"
    out.mkdir()
    err = refused(["segment", bomb, "--out", out / "la.nii.gz"], capfd, out)
    assert re.search(r"extracts to more than 4 MB|cannot be extracted", err), err
    assert _MeasuredTemporaryDirectory.peaks and max(_MeasuredTemporaryDirectory.peaks) <= limit


def test_zip_running_limit_counts_the_bytes_written(tmp_path, monkeypatch):
    """Several members, each declared honestly and the total under the limit as declared
    sizes go; the running count stops the copy at the limit (here lowered below the total)."""
    archive = _zip_of_series(tmp_path)
    total = sum(m.file_size for m in zipfile.ZipFile(archive).infolist())
    monkeypatch.setattr(dicom_zip, "MAX_UNZIPPED_BYTES", total // 2)
    monkeypatch.setattr(dicom_zip, "_check_free_space", lambda *args: None)
    with zipfile.ZipFile(archive) as handle, tempfile.TemporaryDirectory() as tmp:
        written = 0
        with pytest.raises(InputError, match="extracts to more than"):
            for member in handle.infolist():
                written = dicom_zip._extract_member(archive, handle, member, Path(tmp), written)
        held = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    assert 0 < held <= total // 2
