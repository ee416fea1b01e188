"""Where `la-dinov2 segment` writes: outputs that cannot go where asked are refused before the
model loads, the mask, overlay and mesh are written all or none, and the measures printed are
those of the mask written (with the border and volume warnings)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import pytest

from tests import test_cli
from tests.test_cli import _run

# test_cli's fixtures, found by pytest under these names
synthetic_nifti = test_cli.synthetic_nifti
tiny_checkpoint = test_cli.tiny_checkpoint


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: modes cannot refuse it")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# Where an output cannot go, for --out (mask), --png and --mesh-out alike: name -> (folder, why).
UNWRITABLE = {
    "parent is a file": (lambda t: t / "a_file", "is a file"),
    "proc": (lambda t: Path("/proc"), "does not accept new files"),
    "missing folder": (lambda t: t / "no" / "such", "does not exist"),
    "read-only folder": (lambda t: _read_only_folder(t), "does not accept new files"),
}
OUTPUTS = {"--out": "mask.nii.gz", "--png": "overlay.png", "--mesh-out": "la.stl"}


@pytest.mark.parametrize("option", list(OUTPUTS))
@pytest.mark.parametrize("where", [*UNWRITABLE, "existing output"])
def test_unwritable_output_exits_2_before_the_model(
    where, option, tmp_path, synthetic_nifti, tiny_checkpoint, monkeypatch, capsys
):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("napari_la_dinov2.models.load_model", must_not_load)
    (tmp_path / "a_file").write_text("a file, not a folder")
    good = tmp_path / "good"
    good.mkdir()
    paths = {flag: good / name for flag, name in OUTPUTS.items()}
    if where == "existing output":
        paths[option].write_bytes(b"precious")
        expected = "--overwrite"
    else:
        folder, expected = UNWRITABLE[where]
        paths[option] = folder(tmp_path) / OUTPUTS[option]
    argv = [synthetic_nifti, "--checkpoint", tiny_checkpoint]
    code, _, err = _run(["segment", *argv, *[a for f, p in paths.items() for a in (f, p)]], capsys)
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and str(paths[option].parent) in err
    kept = [paths[option].name] if where == "existing output" else []
    assert sorted(p.name for p in good.iterdir()) == kept  # nothing written, no temporary
    if kept:
        assert paths[option].read_bytes() == b"precious"


def test_segment_prints_measures_and_writes_a_closed_mesh(
    tmp_path, synthetic_nifti, foreground_checkpoint, capsys
):
    import trimesh

    from napari_la_dinov2.measures import la_measures
    from napari_la_dinov2.volume_files import read_labels_with_meta

    out, mesh_out = tmp_path / "mask.nii.gz", tmp_path / "la.stl"
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", foreground_checkpoint]
    code, stdout, err = _run([*argv, "--roi", "10:40,5:30,2:9", "--mesh-out", mesh_out], capsys)
    assert code == 0, err
    mesh = trimesh.load(str(mesh_out))
    assert mesh.is_watertight and mesh.volume > 0
    header, values = stdout.strip().splitlines()[-2:]
    printed = dict(zip(header.split("\t"), map(float, values.split("\t"))))
    labels, meta = read_labels_with_meta(out)
    expected = la_measures(labels, meta).as_row()
    assert printed.keys() == expected.keys()
    assert printed["volume_ml"] == pytest.approx(expected["volume_ml"], abs=0.006)
    assert printed["max_diameter_mm"] == pytest.approx(expected["max_diameter_mm"], abs=0.006)
    # The box fills the region it was segmented in: the warning names the region, not the volume.
    assert "warning: The mask touches the border of the segmented region" in err
    assert "warning: The LA volume is" in err  # 7875 voxels x 0.735 mm3 = 5.8 mL < 20 mL


def test_an_empty_mask_warns_and_still_exits_0(
    tmp_path, synthetic_nifti, background_checkpoint, capsys
):
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", background_checkpoint]
    code, stdout, err = _run(argv, capsys)
    assert code == 0 and "warning: The mask is empty" in err
    assert "LA volume 0.0 mL (0 voxels)" in stdout and not nib.load(str(out)).get_fdata().any()

    # No surface can be made of it: with --mesh-out nothing at all is written.
    other, mesh_out = tmp_path / "other.nii.gz", tmp_path / "la.stl"
    code, _, err = _run([*argv[:3], other, *argv[4:], "--mesh-out", mesh_out], capsys)
    assert code == 2 and "empty" in err
    assert not other.exists() and not mesh_out.exists()


def test_mask_overlay_and_mesh_are_written_all_or_none(
    tmp_path, synthetic_nifti, foreground_checkpoint, monkeypatch, capsys
):
    def disk_full(mesh, tmp):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_la_dinov2.mesh._write_vtk", disk_full)
    folder = tmp_path / "outputs"
    folder.mkdir()
    argv = [
        "segment",
        synthetic_nifti,
        "--checkpoint",
        foreground_checkpoint,
        "--roi",
        "10:40,5:30",
    ]
    outputs = [
        "--out",
        folder / "m.nii.gz",
        "--png",
        folder / "m.png",
        "--mesh-out",
        folder / "m.vtk",
    ]
    code, _, err = _run([*argv, *outputs], capsys)
    assert code == 1 and "No space left" in err
    assert list(folder.iterdir()) == []  # neither the mask nor the overlay, nor a temporary


@pytest.mark.realdata
def test_default_model_on_a_real_case_prints_the_written_masks_measures(
    tmp_path, real_data_dir, real_case_ids, capsys
):
    from napari_la_dinov2.measures import la_measures
    from napari_la_dinov2.volume_files import read_labels_with_meta

    source = real_data_dir / "images" / f"{real_case_ids[-1]}.nii.gz"
    out = tmp_path / "mask.nii.gz"
    code, stdout, err = _run(["segment", source, "--out", out, "--device", "cpu"], capsys)
    assert code == 0, err
    header, values = stdout.strip().splitlines()[-2:]
    printed = dict(zip(header.split("\t"), map(float, values.split("\t"))))
    labels, meta = read_labels_with_meta(out)
    expected = la_measures(labels, meta).as_row()
    for key in ("volume_ml", "surface_area_cm2", "max_diameter_mm"):
        assert printed[key] == pytest.approx(expected[key], abs=0.006), key
    assert 20 < printed["volume_ml"] < 400  # a real atrium: no volume warning
