"""`la-dinov2 segment --doubt-out`: the model's doubt beside the mask, and the slices to check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2.cli import main
from napari_la_dinov2.models import build_model, save_checkpoint
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from tests.test_cli import SYNTHETIC_AFFINE


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-unet")


@pytest.fixture
def synthetic_nifti(tmp_path):
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_case()[0], SYNTHETIC_AFFINE), str(path))
    return path


def test_doubt_out_writes_the_doubt_on_the_mask_grid(
    tmp_path, synthetic_nifti, tiny_checkpoint, capsys
):
    out, doubt = tmp_path / "mask.nii.gz", tmp_path / "doubt.nii.gz"
    argv = [
        "segment",
        synthetic_nifti,
        "--out",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--doubt-out",
        doubt,
    ]
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    mask, written = nib.load(str(out)), nib.load(str(doubt))
    assert written.shape == mask.shape and np.allclose(written.affine, mask.affine)
    values = np.asanyarray(written.dataobj)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() > 0
    # A single network's doubt is its disagreement with its mirrored self; the slices listed
    # are those along the through-plane axis with the most of it.
    line = next(line for line in err.splitlines() if line.startswith("slices to check first"))
    listed = [int(v) for v in line.split(": ")[1].split(", ")]
    assert listed and all(0 <= s < mask.shape[2] for s in listed)


def test_doubt_out_is_refused_for_a_folder_and_beside_the_mask(
    tmp_path,
    synthetic_nifti,
    tiny_checkpoint,
    capsys,
):
    out = tmp_path / "mask.nii.gz"
    argv = [
        "segment",
        synthetic_nifti,
        "--out",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--doubt-out",
        out,
    ]
    assert main([str(a) for a in argv]) == 2
    assert "--doubt-out" in capsys.readouterr().err and not out.exists()
    folder = synthetic_nifti.parent
    argv = ["segment", folder, "--out", tmp_path / "masks", "--doubt-out", tmp_path / "d.nii.gz"]
    assert main([str(a) for a in argv]) == 2
    assert "--doubt-out applies to one scan" in capsys.readouterr().err
