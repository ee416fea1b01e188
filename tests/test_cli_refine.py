"""`la-dinov2 refine IMAGE MASK --add/--remove ... --out OUT`: the usual contract (exit 2 and
one sentence, nothing written on refusal, the image's exact geometry), clicks in the order given."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2.interactive import Click, Refiner, load_click_model
from napari_la_dinov2.volume_files import read_volume
from tests.test_cli import SYNTHETIC_AFFINE, _run
from tests.test_interactive import tiny_refiner

from .conftest import synthetic_case


@pytest.fixture(scope="module")
def click_model_dir(tmp_path_factory) -> Path:
    _, refiner = tiny_refiner(crop=16, window_mm=5.0, seed=1)
    return refiner.model.save(tmp_path_factory.mktemp("clicks") / "tiny-clicks")


def _refine(capsys, image, mask, out, model, *extra) -> tuple[int, str]:
    code, _, err = _run(
        ["refine", image, mask, *extra, "--out", out, "--click-model", model], capsys
    )
    return code, err


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    image, truth = synthetic_case(shape=(40, 36, 14))
    image_path, mask_path = tmp_path / "case.nii.gz", tmp_path / "case_la.nii.gz"
    nib.save(nib.Nifti1Image(image, SYNTHETIC_AFFINE), str(image_path))
    nib.save(nib.Nifti1Image(truth, SYNTHETIC_AFFINE), str(mask_path))
    return image_path, mask_path


def test_refine_applies_the_clicks_in_order_on_the_image_grid(
    pair, click_model_dir, tmp_path, capsys
):
    image_path, mask_path = pair
    out = tmp_path / "refined.nii.gz"
    argv = [
        "refine",
        image_path,
        mask_path,
        "--remove",
        "20,18,7",
        "--add",
        "5,5,2",
        "--remove",
        "30,30,10",
        "--out",
        out,
        "--click-model",
        click_model_dir,
    ]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    written = nib.load(str(out))
    np.testing.assert_array_equal(written.affine, nib.load(str(image_path)).affine)
    assert written.get_data_dtype() == np.uint8
    # the same clicks through the engine, in the same order
    image, meta = read_volume(image_path)
    mask = np.asanyarray(nib.load(str(mask_path)).dataobj).astype(np.uint8)
    refiner = Refiner(load_click_model(click_model_dir))
    prepared = refiner.prepare(image, meta)
    clicks = [Click((20, 18, 7), False), Click((5, 5, 2), True), Click((30, 30, 10), False)]
    for k in range(1, 4):
        mask = refiner.refine(prepared, mask, clicks[:k])
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask)
    assert "3 click(s)" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--add", "40,5,5"], "outside the volume"),
        (["--remove", "5,5,-1"], "outside the volume"),
        (["--add", "-1,5,5"], "outside the volume"),
        (["--add", "5,5"], "three integers"),
        ([], "no click given"),
    ],
)
def test_refine_refuses_bad_clicks_before_any_work(
    pair, click_model_dir, tmp_path, capsys, extra, message
):
    out = tmp_path / "refined.nii.gz"
    code, err = _refine(capsys, *pair, out, click_model_dir, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_refine_refuses_a_mask_on_another_grid_and_an_existing_output(
    pair, click_model_dir, tmp_path, capsys
):
    image_path, mask_path = pair
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 13), np.uint8), SYNTHETIC_AFFINE), str(other))
    out = tmp_path / "refined.nii.gz"
    code, err = _refine(capsys, image_path, other, out, click_model_dir, "--add", "5,5,5")
    assert code == 2 and "grid" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    out.write_bytes(b"keep me")
    code, err = _refine(capsys, *pair, out, click_model_dir, "--add", "5,5,5")
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"
    code, err = _refine(capsys, *pair, out, click_model_dir, "--add", "5,5,5", "--overwrite")
    assert code == 0, err
