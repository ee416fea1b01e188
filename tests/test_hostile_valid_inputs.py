"""Inputs that look odd but are valid (oblique, LPS NRRD, detached header, NIfTI-2, qform
beside sform, int16, float64, NaN voxels): the mask lands on exactly the input's grid.
Nothing unpickles (test_hostile.no_pickle)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2.cli import main
from tests.conftest import synthetic_case
from tests.test_hostile import AFFINE, SHAPE, checkpoint, no_pickle  # noqa: F401 (fixtures)


def _oblique() -> np.ndarray:
    from tests.test_io import oblique_affine

    return oblique_affine()


def _valid_nifti(
    folder,
    affine=AFFINE,
    dtype=np.float32,
    nan=False,
    kind=nib.Nifti1Image,
    qform=None,
    suffix=".nii.gz",
):
    volume, _ = synthetic_case(SHAPE)
    volume = volume.astype(dtype)
    if nan:
        volume[0, 0, :] = np.nan
    image = kind(volume, affine)
    if qform is not None:
        image.set_qform(qform, code=1)
        image.set_sform(affine, code=2)
    path = folder / f"x{suffix}"
    nib.save(image, path)
    return path


def _valid_nrrd(folder, detached=False):
    import nrrd

    volume, _ = synthetic_case(SHAPE)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.9, 1.1, 2.0]),
        "space origin": np.array([10.0, -5.0, 3.0]),
        "kinds": ["domain"] * 3,
    }
    path = folder / ("x.nhdr" if detached else "x.nrrd")
    nrrd.write(str(path), volume, header, detached_header=detached)
    return path


VALID_INPUTS = {
    "oblique": lambda f: _valid_nifti(f, affine=_oblique()),
    "LPS NRRD": _valid_nrrd,
    "detached .nhdr": lambda f: _valid_nrrd(f, detached=True),
    "NIfTI-2": lambda f: _valid_nifti(f, kind=nib.Nifti2Image, suffix=".nii"),
    "qform != sform": lambda f: _valid_nifti(f, qform=AFFINE + np.eye(4, k=3) * 5),
    "int16": lambda f: _valid_nifti(f, dtype=np.int16),
    "float64": lambda f: _valid_nifti(f, dtype=np.float64),
    "NaN voxels": lambda f: _valid_nifti(f, nan=True),
}


@pytest.mark.parametrize("case", list(VALID_INPUTS))
def test_odd_but_valid_input_gets_a_mask_on_its_grid(
    case,
    checkpoint,  # noqa: F811 (the fixture imported from test_hostile)
    tmp_path,
    capfd,
):
    from napari_la_dinov2.volume_files import read_volume

    folder = tmp_path / "in"
    folder.mkdir()
    source = VALID_INPUTS[case](folder)
    out = tmp_path / ("m.nrrd" if "NRRD" in case or "nhdr" in case else "m.nii.gz")
    argv = ["segment", source, "--out", out, "--checkpoint", checkpoint, "--device", "cpu"]
    assert main([str(a) for a in argv]) == 0, capfd.readouterr().err
    volume, meta = read_volume(source)
    mask = nib.load(out) if out.suffix == ".gz" else None
    if mask is not None:
        assert mask.shape == volume.shape
        np.testing.assert_allclose(mask.affine, meta.affine, atol=1e-5)
    else:
        _, mask_meta = read_volume_labels(out)
        assert mask_meta.shape == volume.shape
        np.testing.assert_allclose(mask_meta.affine, meta.affine, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", out.name])


def read_volume_labels(path):
    from napari_la_dinov2.volume_files import read_labels_with_meta

    return read_labels_with_meta(path)
