"""The `la-dinov2` command line, run in-process through ``main(argv)`` and once as the installed
console script: outputs on the input's grid, one-line errors with exit 2, nothing written on
failure, existing files kept unless --overwrite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_la_dinov2.cli import main
from napari_la_dinov2.models import build_model, count_parameters, list_models, save_checkpoint
from napari_la_dinov2.overlay import choose_slices
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case

# A slightly oblique affine with anisotropic voxels: the mask must come back with exactly it.
_ROTATION = np.array([[0.995, -0.0998, 0.0], [0.0998, 0.995, 0.0], [0.0, 0.0, 1.0]])
SYNTHETIC_AFFINE = np.eye(4)
SYNTHETIC_AFFINE[:3, :3] = _ROTATION @ np.diag([0.7, 0.7, 1.5])
SYNTHETIC_AFFINE[:3, 3] = (-20.0, 10.0, 5.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random UNet saved as a checkpoint folder (safetensors + config.json)."""
    torch.manual_seed(0)
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-unet")


@pytest.fixture
def synthetic_nifti(tmp_path) -> Path:
    image, _ = synthetic_case()
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, SYNTHETIC_AFFINE), str(path))
    return path


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_mask_on_grid(out: Path, source: Path) -> np.ndarray:
    written, reference = nib.load(str(out)), nib.load(str(source))
    assert written.shape == reference.shape
    np.testing.assert_array_equal(written.affine, reference.affine)
    assert written.get_data_dtype() == np.uint8
    data = np.asanyarray(written.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    return data


def test_segment_synthetic_writes_mask_and_png(tmp_path, synthetic_nifti, tiny_checkpoint, capsys):
    out, png = tmp_path / "mask.nii.gz", tmp_path / "overlay.png"
    code, stdout, err = _run(
        ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint, "--png", png],
        capsys,
    )
    assert code == 0, err
    _assert_mask_on_grid(out, synthetic_nifti)
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "LA volume" in stdout and "mL" in stdout and "unet" in stdout and "cpu" in stdout


def test_segment_reports_volume_and_honours_roi(
    tmp_path, synthetic_nifti, foreground_checkpoint, capsys
):
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", foreground_checkpoint]
    code, stdout, err = _run([*argv, "--roi", "10:40,5:30,2:9", "--no-morphology"], capsys)
    assert code == 0, err
    mask = _assert_mask_on_grid(out, synthetic_nifti)
    expected = np.zeros_like(mask)
    expected[10:40, 5:30, 2:9] = 1  # slice axis 2 is the coarsest (1.5 mm)
    np.testing.assert_array_equal(mask, expected)
    volume_ml = expected.sum() * 0.7 * 0.7 * 1.5 / 1000
    assert f"LA volume {volume_ml:.1f} mL ({expected.sum()} voxels)" in stdout


def test_segment_real_case_cropped(tmp_path, real_data_dir, real_case_ids, tiny_checkpoint, capsys):
    full = nib.load(str(real_data_dir / "images" / f"{real_case_ids[0]}.nii.gz"))
    middle = full.shape[2] // 2
    cropped = full.slicer[:, :, middle : middle + 6]  # nibabel shifts the affine's origin
    source = tmp_path / "real.nii.gz"
    nib.save(cropped, str(source))
    out = tmp_path / "real_mask.nii.gz"
    code, _, err = _run(
        ["segment", source, "--out", out, "--checkpoint", tiny_checkpoint, "--batch-size", 4],
        capsys,
    )
    assert code == 0, err
    _assert_mask_on_grid(out, source)
    np.testing.assert_allclose(nib.load(str(out)).affine[:3, :3], full.affine[:3, :3])


def _not_a_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    return folder


def _text_as_nifti(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii.gz"
    path.write_text("not an image at all\n")
    return path


def _image_2d(tmp_path: Path) -> Path:
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(32, 32).astype(np.float32), np.eye(4)), str(path))
    return path


BAD_INPUTS = {
    "missing input": lambda t, src, ck: ["segment", t / "missing.nii.gz", "--checkpoint", ck],
    "input is a folder": lambda t, src, ck: ["segment", t, "--checkpoint", ck],
    "not an image": lambda t, src, ck: ["segment", _text_as_nifti(t), "--checkpoint", ck],
    "2D image": lambda t, src, ck: ["segment", _image_2d(t), "--checkpoint", ck],
    "malformed roi": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--roi", "1:2"],
    "empty roi": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--roi", "0:4,0:4"],
    "batch size 0": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--batch-size", "0"],
    "threshold": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--threshold", "1.5"],
    "unknown model": lambda t, src, ck: ["segment", src, "--model", "unet3000"],
    "unknown device": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--device", "tpu7"],
    "model and checkpoint": lambda t, src, ck: [
        "segment",
        src,
        "--model",
        "unet",
        "--checkpoint",
        ck,
    ],
    "not a checkpoint": lambda t, src, ck: ["segment", src, "--checkpoint", _not_a_checkpoint(t)],
    "pickled checkpoint": lambda t, src, ck: ["segment", src, "--checkpoint", t / "weights.pt"],
    "png suffix": lambda t, src, ck: ["segment", src, "--checkpoint", ck, "--png", t / "o.jpg"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, tmp_path, synthetic_nifti, tiny_checkpoint, capsys):
    out = tmp_path / "out" / "mask.nii.gz"
    out.parent.mkdir()  # an output that could be written: the refusal is for the input's sake
    argv = [*BAD_INPUTS[case](tmp_path, synthetic_nifti, tiny_checkpoint), "--out", out]
    code, stdout, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("la-dinov2: error: "), err
    assert "Traceback" not in err
    assert not any(out.parent.iterdir())  # no file, no temp file


@pytest.mark.parametrize("suffix", [".txt", ".png"])
def test_bad_output_name_exits_2(suffix, tmp_path, synthetic_nifti, tiny_checkpoint, capsys):
    out = tmp_path / f"mask{suffix}"
    code, _, err = _run(
        ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_out_and_unknown_command_exit_2(synthetic_nifti, capsys):
    for argv in (["segment", synthetic_nifti], ["segmnt", synthetic_nifti], []):
        code, _, err = _run(argv, capsys)
        assert code == 2
        assert "Traceback" not in err


def test_existing_output_is_refused_before_loading_the_model(
    tmp_path, synthetic_nifti, tiny_checkpoint, monkeypatch, capsys
):
    out, png = tmp_path / "mask.nii.gz", tmp_path / "overlay.png"
    out.write_bytes(b"precious")
    png.write_bytes(b"also precious")

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr("napari_la_dinov2.models.load_model", must_not_load)
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"

    other = tmp_path / "other.nii.gz"
    code, _, err = _run([*argv[:3], other, *argv[4:], "--png", png], capsys)
    assert code == 2 and str(png) in err
    assert png.read_bytes() == b"also precious" and not other.exists()


def test_overwrite_replaces_existing_output(tmp_path, synthetic_nifti, tiny_checkpoint, capsys):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"old")
    code, _, err = _run(
        ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint, "--overwrite"],
        capsys,
    )
    assert code == 0, err
    _assert_mask_on_grid(out, synthetic_nifti)


def test_output_may_not_replace_the_input(synthetic_nifti, tiny_checkpoint, capsys):
    before = synthetic_nifti.read_bytes()
    code, _, err = _run(
        ["segment", synthetic_nifti, "--out", synthetic_nifti, "--checkpoint", tiny_checkpoint]
        + ["--overwrite"],
        capsys,
    )
    assert code == 2 and "input" in err
    assert synthetic_nifti.read_bytes() == before


def test_internal_error_exits_1_with_traceback(
    tmp_path, synthetic_nifti, tiny_checkpoint, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("napari_la_dinov2.inference.Predictor.probabilities", broken)
    out = tmp_path / "mask.nii.gz"
    code, _, err = _run(
        ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint], capsys
    )
    assert code == 1
    assert "Traceback" in err and "simulated bug" in err
    assert not out.exists()


def test_ctrl_c_exits_130_and_writes_nothing(
    tmp_path, synthetic_nifti, tiny_checkpoint, monkeypatch, capsys
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_la_dinov2.inference.Predictor.probabilities", interrupted)
    out = tmp_path / "mask.nii.gz"
    code, _, _ = _run(
        ["segment", synthetic_nifti, "--out", out, "--checkpoint", tiny_checkpoint], capsys
    )
    assert code == 130 and not out.exists()


def test_models_lists_every_registry_model(capsys):
    code, stdout, _ = _run(["models"], capsys)
    assert code == 0
    rows = stdout.splitlines()[1:-1]  # between the header and the footnote on the grid
    names = {line.split()[0] for line in rows}
    assert names == {"default", *list_models()}
    vitb = next(line for line in stdout.splitlines() if line.startswith("dinov2_vitb14 "))
    size = f"{count_parameters('dinov2_vitb14') / 1e6:.1f}M"  # ~87M: the ViT-B/14 backbone
    assert size in vitb and "448x448" in vitb and "facebook/dinov2-base" in vitb
    assert 86e6 < count_parameters("dinov2_vitb14") < 90e6


def _console_script() -> str | None:
    beside_python = Path(sys.executable).parent / "la-dinov2"
    return str(beside_python) if beside_python.exists() else shutil.which("la-dinov2")


def test_installed_console_script(tmp_path, synthetic_nifti, tiny_checkpoint):
    script = _console_script()
    if script is None:
        pytest.skip("the la-dinov2 console script is not installed (pip install -e .)")
    out = tmp_path / "mask.nii.gz"
    argv = [script, "segment", str(synthetic_nifti), "--out", str(out)]
    done = subprocess.run(
        [*argv, "--checkpoint", str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "LA volume" in done.stdout
    _assert_mask_on_grid(out, synthetic_nifti)

    refused = subprocess.run(
        [*argv, "--checkpoint", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("la-dinov2: error: ") and refused.stderr.count("\n") == 1


def test_choose_slices_picks_the_largest_spread_out():
    mask = np.zeros((20, 20, 30), dtype=bool)
    areas = {5: 4, 10: 9, 11: 10, 12: 8, 20: 7, 25: 2}
    for index, side in areas.items():
        mask[:side, :side, index] = True
    assert choose_slices(mask, slice_axis=2, count=3) == [5, 11, 20]
    assert choose_slices(mask, slice_axis=2, count=1) == [11]
    assert len(choose_slices(np.zeros((8, 8, 9), bool), slice_axis=2, count=3)) == 3
