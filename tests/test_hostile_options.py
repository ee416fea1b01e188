"""Numbers as a careless script passes them, and the README's promises on outputs and masks:
each refused in one line before any work (or, for an odd but valid mask, handled)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2.cli import main
from tests.test_hostile import refused


def _mask(path: Path, values, affine=None) -> Path:
    data = np.zeros((12, 12, 6), np.float32)
    data[4:8, 4:8, 2:4] = values
    nib.save(
        nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine), path
    )
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    data = np.random.default_rng(0).uniform(0, 100, (20, 18, 6)).astype(np.float32)
    path = tmp_path / "in" / "image.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--center", ""], "--center '' is not of the form i,j,k"),
        (["--roi", ""], "--roi '' is not of the form"),
        (["--center", "-1,5,5"], "--center -1,5,5 is outside the volume"),
        (["--roi", "-3:5,0:4"], "leaves nothing to segment"),
        (["--batch-size", "-2"], "must be at least 1, not -2"),
        (["--threshold", "-0.5"], "must be between 0 and 1"),
        (["--slice-axis", "-1"], "invalid choice: -1"),
    ],
)
def test_segment_numbers_refused_before_the_model(
    extra, message, image, tmp_path, capfd, no_model_load
):
    out = tmp_path / "out"
    out.mkdir()
    argv = ["segment", image, "--out", out / "la.nii.gz", "--checkpoint", "any", *extra]
    refused(argv, capfd, out, image.parent, message=message)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resamples", "1000000000"], "must be from 100 to 100000, not 1000000000"),
        (["--resamples", "10"], "must be from 100 to 100000"),
        (["--seed", "-5"], "must be from 0 to 4294967295, not -5"),
        (["--seed", "1e3"], "'1e3' is not a whole number"),
        (["--csv", "missing-folder/x.csv"], "does not exist"),
    ],
)
def test_evaluate_numbers_and_outputs(extra, message, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pred, gt = _mask(tmp_path / "pred.nii.gz", 1), _mask(tmp_path / "gt.nii.gz", 1)
    refused(["evaluate", pred, gt, *extra], capfd, tmp_path, message=message)


@pytest.mark.parametrize(
    "make, out, message",
    [
        (lambda p: _mask(p, np.inf), "la.stl", "holds NaN or infinite values"),
        (lambda p: _mask(p, 1, np.diag([1e-3, 1e-3, 1e-3, 1.0])), "la.stl", "voxel size 0.001"),
        (lambda p: _mask(p, 1, np.diag([1e6, 1.0, 1.0, 1.0])), "la.stl", "voxel size 1e+06"),
        (lambda p: _mask(p, 1), "no-such-folder/la.stl", "does not exist"),
    ],
    ids=["inf mask", "1e-3 mm voxels", "1e6 mm voxels", "missing output folder"],
)
def test_mesh_refusals(make, out, message, tmp_path, capfd):
    mask = make(tmp_path / "mask.nii.gz")
    refused(["mesh", mask, "--out", tmp_path / out], capfd, tmp_path, message=message)


def test_mesh_of_one_voxel(tmp_path, capfd):
    data = np.zeros((12, 12, 6), np.uint8)
    data[5, 5, 3] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "one.nii.gz")
    assert main(["mesh", str(tmp_path / "one.nii.gz"), "--out", str(tmp_path / "one.stl")]) == 0
    assert "Traceback" not in capfd.readouterr().err and (tmp_path / "one.stl").stat().st_size


@pytest.mark.parametrize("settings", [{"seed": -5}, {"split_seed": 2**40}, {"seed": 1.5}])
def test_training_seeds_are_bounded(settings):
    from napari_la_dinov2.errors import InputError
    from napari_la_dinov2.training.train_config import TrainConfig

    with pytest.raises(InputError, match="must be a whole number from 0 to 2"):
        TrainConfig(**settings).resolved({"epochs": 1, "batch_size": 1, "lr": 1e-3})
