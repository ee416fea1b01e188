"""A region from one click: the model's training grid (recorded by finetune, shipped with the
default model, listed by `la-dinov2 models`), ``RegionOfInterest.around`` in millimetres, and
``la-dinov2 segment --center``; on a real case embedded in a full-size field of view."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.grid import (
    FALLBACK_FIELD_OF_VIEW_MM,
    field_of_view_mm,
    resample,
    training_grid,
)
from napari_la_dinov2.inference import RegionOfInterest
from napari_la_dinov2.models import load_model
from napari_la_dinov2.training import Case, TrainConfig, finetune
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from tests.test_cli import _run, synthetic_nifti  # noqa: F401 (fixtures)

ANISOTROPIC = VolumeMeta.from_spacing((400, 300, 40), (0.5, 0.5, 2.0))


def test_around_converts_mm_with_the_volumes_spacing():
    # 120 x 90 mm in-plane at 0.5 mm = 240 x 180 voxels; 40 mm through-plane at 2 mm = 20.
    roi = RegionOfInterest.around((200, 150, 20), ANISOTROPIC, (120.0, 90.0, 40.0))
    # Odd or even, the centre voxel has floor((n - 1) / 2) voxels of the region before it.
    assert roi.box == (200 - 119, 200 + 121, 150 - 89, 150 + 91)
    assert roi.slices == (20 - 9, 20 + 11)


def test_around_slides_inside_at_the_edges_and_cuts_to_short_axes():
    roi = RegionOfInterest.around((3, 299, 39), ANISOTROPIC, (120.0, 90.0, 40.0))
    assert roi.box == (0, 240, 300 - 180, 300)  # the size is kept: slid, not cut
    assert roi.slices == (40 - 20, 40)
    # Longer than the volume along z (200 mm > 80 mm): the whole axis.
    assert RegionOfInterest.around((0, 0, 0), ANISOTROPIC, (120.0, 90.0, 200.0)).slices == (0, 40)


def test_around_follows_the_slice_axis():
    """The same scan stored (z, y, x): through-plane is array axis 0, in-plane 1 and 2 are
    array axes 1 and 2, and the field of view applies in that acquisition order."""
    stored_zyx = VolumeMeta.from_spacing((40, 300, 400), (2.0, 0.5, 0.5))
    assert stored_zyx.through_plane_axis() == 0
    roi = RegionOfInterest.around((20, 150, 200), stored_zyx, (90.0, 120.0, 40.0))
    assert roi.slices == (11, 31)
    assert roi.box == (150 - 89, 150 + 91, 200 - 119, 200 + 121)
    # An explicit slice axis wins over the affine's coarsest axis.
    forced = RegionOfInterest.around((20, 150, 200), stored_zyx, (10.0, 10.0, 10.0), slice_axis=2)
    assert forced.slices == (200 - 9, 200 + 11) and forced.box == (
        20 - 2,
        20 + 3,
        150 - 9,
        150 + 11,
    )


@pytest.mark.parametrize("center", [(400, 0, 0), (0, -1, 0), (0, 0, 40.5), (1, 2)])
def test_around_refuses_a_centre_outside_the_volume(center):
    with pytest.raises(InputError, match="outside the volume"):
        RegionOfInterest.around(center, ANISOTROPIC, (120.0, 90.0, 40.0))


def test_training_grid_is_in_acquisition_order():
    xyz = VolumeMeta.from_spacing((200, 140, 88), (0.6, 0.7, 1.25))
    zyx = VolumeMeta.from_spacing((40, 150, 180), (2.5, 0.8, 0.8))
    third = VolumeMeta.from_spacing((100, 100, 50), (1.0, 1.0, 2.0))
    grid = training_grid([xyz, zyx, third])
    assert grid["spacing_mm"] == [0.8, 0.8, 2.0]  # medians of (0.6, 0.8, 1), (0.7, 0.8, 1)...
    assert grid["field_of_view_mm"] == [120.0, 100.0, 100.0]  # (120, 120, 100), (98, 120, 100)
    assert grid["cases"] == 3
    assert field_of_view_mm({"training_grid": grid}) == ((120.0, 100.0, 100.0), True)
    assert field_of_view_mm({}) == (FALLBACK_FIELD_OF_VIEW_MM, False)


def test_resample_keeps_the_field_of_view_and_updates_the_affine():
    meta = VolumeMeta(affine=np.diag([-0.625, -0.625, 1.25, 1.0]), shape=(160, 128, 88))
    volume = np.zeros(meta.shape, np.float32)
    out, affine = resample(volume, meta.affine, (1.25, 1.25, 2.5))
    new = VolumeMeta(affine=affine, shape=out.shape)
    assert out.shape == (80, 64, 44) and new.spacing == (1.25, 1.25, 2.5)
    # The outer voxel corners are the same points in space.
    for corner in ([-0.5, -0.5, -0.5], [159.5, 127.5, 87.5]):
        new_corner = np.asarray(corner) * np.asarray(out.shape) / np.asarray(meta.shape)
        new_corner += (np.asarray(out.shape) / np.asarray(meta.shape) - 1) * 0.5
        np.testing.assert_allclose(new.affine @ [*new_corner, 1], meta.affine @ [*corner, 1])


def test_finetune_records_the_training_grid(tmp_path):
    """Two training volumes stored in different axis orders; the grid is in acquisition order."""
    image, mask = synthetic_case((40, 36, 6))
    xyz = Case("xyz", image, mask, VolumeMeta.from_spacing(image.shape, (0.5, 0.5, 2.0)))
    zyx_image, zyx_mask = image.transpose(2, 1, 0).copy(), mask.transpose(2, 1, 0).copy()
    zyx = Case(
        "zyx", zyx_image, zyx_mask, VolumeMeta.from_spacing(zyx_image.shape, (2.0, 0.7, 0.7))
    )
    config = TrainConfig(
        model="unet",
        model_kwargs=TINY_UNET_KWARGS,
        preprocessing=TINY_UNET_PREPROCESSING,
        epochs=1,
        steps_per_epoch=1,
        batch_size=4,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    result = finetune([xyz, zyx], config, val_cases=[xyz])
    grid = load_model(result.best_checkpoint).provenance["training_grid"]
    # In-plane 1 and 2 are x, y of the first and y, x of the second (their array order).
    assert grid["spacing_mm"] == [0.6, 0.6, 2.0]
    assert grid["field_of_view_mm"] == pytest.approx([(20 + 36 * 0.7) / 2, (18 + 28) / 2, 12])


def test_default_model_records_its_training_grid():
    provenance = load_model("default").provenance
    grid = provenance["training_grid"]
    assert grid["cases"] == len(provenance["trained_on"]) == 64
    assert grid["spacing_mm"] == [0.625, 0.625, 1.25]
    # LA 2018 crops: 88 slices of 1.25 mm; in-plane 180-230 x 130-150 voxels of 0.625 mm.
    assert grid["field_of_view_mm"][2] == 110.0
    assert 110 <= grid["field_of_view_mm"][0] <= 145 and 80 <= grid["field_of_view_mm"][1] <= 95


def test_models_lists_the_training_grid(capsys):
    code, stdout, _ = _run(["models"], capsys)
    default = next(line for line in stdout.splitlines() if line.startswith("default "))
    assert code == 0 and "0.625x0.625x1.25 / 119x89x110" in default


def test_segment_center_segments_the_field_of_view_around_it(
    tmp_path,
    synthetic_nifti,  # noqa: F811 (the fixture imported from test_cli)
    foreground_checkpoint,  # noqa: F811
    capsys,
):
    """The all-foreground model's mask is the region itself: the fallback field of view (the
    checkpoint records none) around the centre, on the 0.7 x 0.7 x 1.5 mm grid."""
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", foreground_checkpoint]
    code, _, err = _run([*argv, "--center", "30,20,5", "--no-morphology"], capsys)
    assert code == 0, err
    assert "does not record its training field of view" in err
    meta = VolumeMeta(affine=nib.load(str(synthetic_nifti)).affine, shape=(64, 56, 12))
    index = RegionOfInterest.around((30, 20, 5), meta, FALLBACK_FIELD_OF_VIEW_MM).clamp(
        meta.shape, 2
    )
    expected = np.zeros(meta.shape, np.uint8)
    expected[index] = 1
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), expected)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--center", "1,2"], "not of the form i,j,k"),
        (["--center", "a,b,c"], "not of the form i,j,k"),
        (["--center", "64,0,0"], "outside the volume of shape (64, 56, 12)"),
        (["--center", "0,-1,0"], "outside the volume"),
        (["--center", "1,2,3", "--roi", "0:9,0:9"], "not allowed with argument"),
    ],
)
def test_segment_center_errors_exit_2(
    extra,
    message,
    tmp_path,
    synthetic_nifti,  # noqa: F811 (the fixture imported from test_cli)
    foreground_checkpoint,  # noqa: F811
    capsys,
):
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", synthetic_nifti, "--out", out, "--checkpoint", foreground_checkpoint]
    code, _, err = _run([*argv, *extra], capsys)
    assert code == 2 and message in err and not out.exists()


def _embed(image, meta, size=400, seed=0):
    """``image`` in the middle of a ``size`` x ``size`` field, padded with noise of the crop's
    background statistics, the affine moved so the crop's voxels keep their positions."""
    rng = np.random.default_rng(seed)
    background = image[image < np.percentile(image, 50)]
    field = rng.normal(background.mean(), background.std(), (size, size, image.shape[2]))
    offset = ((size - image.shape[0]) // 2, (size - image.shape[1]) // 2)
    crop = (
        slice(offset[0], offset[0] + image.shape[0]),
        slice(offset[1], offset[1] + image.shape[1]),
    )
    field[crop] = image
    shift = np.eye(4)
    shift[:2, 3] = [-offset[0], -offset[1]]
    return field.clip(0, 255).astype(np.uint8), meta.affine @ shift, crop


def _segment(source, out, extra, capsys) -> np.ndarray:
    code, _, err = _run(["segment", source, "--out", out, *extra], capsys)
    assert code == 0, err
    return np.asanyarray(nib.load(str(out)).dataobj)


@pytest.mark.realdata
def test_one_click_on_a_full_field_matches_the_crop(real_data_dir, real_case_ids, tmp_path, capsys):
    """A real LA 2018 crop embedded in a 400 x 400 field: --center at the atrium's centre (the
    default model, its recorded field of view) agrees with segmenting the crop alone.

    Measured on this case: the crop's own box inside the field gives Dice 0.99997 against the
    crop alone, so the surrounding field does not disturb the model; the clicked region (191 x
    142 voxels, framed on the atrium's centre rather than where the crop happened to be cut)
    gives 0.985, the difference being the framing: Dice against the expert mask is 0.926 for
    both. So agreement is asked at 0.98, and the expert-mask Dice within 0.005."""
    from napari_la_dinov2.scoring.metrics import dice
    from napari_la_dinov2.volume_files import read_volume

    case = real_case_ids[0]
    image, meta = read_volume(real_data_dir / "images" / f"{case}.nii.gz")
    truth, _ = read_volume(real_data_dir / "labels" / f"{case}.nii.gz")
    field, affine, crop = _embed(image, meta)
    crop_path, field_path = tmp_path / "crop.nii.gz", tmp_path / "field.nii.gz"
    nib.save(nib.Nifti1Image(image, meta.affine), str(crop_path))
    nib.save(nib.Nifti1Image(field, affine), str(field_path))
    offset = np.array([crop[0].start, crop[1].start, 0])
    center = np.round(np.argwhere(truth).mean(axis=0)).astype(int) + offset

    alone = _segment(crop_path, tmp_path / "alone.nii.gz", [], capsys)
    box = f"{crop[0].start}:{crop[0].stop},{crop[1].start}:{crop[1].stop}"
    boxed = _segment(field_path, tmp_path / "boxed.nii.gz", ["--roi", box], capsys)
    text = ",".join(map(str, center))
    clicked = _segment(field_path, tmp_path / "clicked.nii.gz", ["--center", text], capsys)
    assert dice(boxed[crop], alone) >= 0.999  # the field around the crop changes nothing
    assert clicked.sum() == clicked[crop].sum()  # nothing found in the noise around it
    assert dice(clicked[crop], alone) >= 0.98
    assert abs(dice(clicked[crop], truth) - dice(alone, truth)) <= 0.005
