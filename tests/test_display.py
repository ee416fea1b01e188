"""The acquisition plane on screen: to_display/from_display are exact inverses, and a displayed
voxel sits where the file's affine says (world = world_from_ras @ RAS; for axial acquisitions
that is the LPS position in reversed order, (S, P, L))."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_la_dinov2.display import (
    display_to_file_index,
    file_to_display_index,
    from_display,
    to_display,
    world_from_ras_of_labels,
)
from napari_la_dinov2.overlay import render_overlay
from napari_la_dinov2.volume_files import VolumeMeta, read_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (23, 19, 11)  # distinct lengths, so a wrong transpose cannot go unnoticed


def _spacing(through: int) -> list[float]:
    spacing = [0.625, 0.7, 0.625]
    spacing[through] = 1.25  # the coarse axis is the acquisition's slice axis
    return spacing


def _axial_direction(through: int, lps: bool) -> np.ndarray:
    """Columns: the RAS direction of each voxel axis; the slice axis points superior."""
    inplane = [a for a in range(3) if a != through]
    direction = np.zeros((3, 3))
    direction[2, through] = 1.0
    direction[0, inplane[0]] = -1.0 if lps else 1.0  # L (LPS) or R (RAS)
    direction[1, inplane[1]] = -1.0 if lps else 1.0  # P (LPS) or A (RAS)
    return direction


def _affine(kind: str, through: int) -> np.ndarray:
    affine = np.eye(4)
    if kind == "oblique":
        rotation = Rotation.from_euler("xyz", [12, -9, 25], degrees=True).as_matrix()
        direction = rotation @ _axial_direction(through, lps=True)
    else:
        direction = _axial_direction(through, lps=kind != "ras")
    affine[:3, :3] = direction @ np.diag(_spacing(through))
    affine[:3, 3] = (-40.5, 22.0, -13.75)
    return affine


def _volume(tmp_path, kind: str, through: int):
    """(array, meta) as read_volume gives them: written to a file first (NIfTI or LPS NRRD)."""
    data = np.random.default_rng(through).integers(0, 200, SHAPE).astype(np.float32)
    affine = _affine("lps" if kind == "nrrd" else kind, through)
    if kind == "nrrd":
        lps = LPS_TO_RAS @ affine
        path = tmp_path / "volume.nrrd"
        header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T}
        nrrd.write(str(path), data, {**header, "space origin": lps[:3, 3]})
    else:
        path = tmp_path / "volume.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
    volume, meta = read_volume(path)
    assert np.allclose(meta.affine, affine, atol=1e-5)
    return volume, meta


def _napari_world(geometry, index: np.ndarray) -> np.ndarray:
    """What napari computes: world = affine @ (scale * index + translate)."""
    transforms = geometry.layer_transforms()
    physical = np.asarray(transforms["scale"]) * index + np.asarray(transforms["translate"])
    turn = transforms.get("affine", np.eye(4))
    return (turn @ [*physical, 1.0])[:3]


KINDS = ["ras", "lps", "oblique", "nrrd"]


@pytest.mark.parametrize("through", [0, 1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_exact_and_slices_go_on_the_slider(tmp_path, kind, through):
    volume, meta = _volume(tmp_path, kind, through)
    assert meta.through_plane_axis() == through
    display, geometry = to_display(volume, meta)
    assert geometry.axes[0] == through and display.shape[0] == SHAPE[through]
    assert geometry.plane == "axial" and geometry.axis_labels[0] == "inferior→superior"
    assert np.shares_memory(display, volume)  # a view: painting it paints the array
    back = from_display(display, geometry)
    assert back.dtype == volume.dtype and np.array_equal(back, volume)
    mask = (volume > 150).astype(np.uint8)
    shown = to_display(mask, meta)[0]
    assert np.array_equal(from_display(np.ascontiguousarray(shown), geometry), mask)


@pytest.mark.parametrize("through", [0, 1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_displayed_voxels_sit_at_their_file_positions(tmp_path, kind, through):
    volume, meta = _volume(tmp_path, kind, through)
    display, geometry = to_display(volume, meta)
    rng = np.random.default_rng(3)
    for index in rng.integers(0, display.shape, size=(25, 3)):
        file_index = display_to_file_index(index, geometry)
        assert display[tuple(index)] == volume[tuple(file_index.astype(int))]
        assert np.allclose(file_to_display_index(file_index, geometry), index)
        ras = (meta.affine @ [*file_index, 1.0])[:3]
        world = _napari_world(geometry, index.astype(float))
        assert np.allclose(world, geometry.world_from_ras @ ras, atol=1e-6)
        assert np.allclose(world, (LPS_TO_RAS[:3, :3] @ ras)[::-1], atol=1e-6)  # (S, P, L)


@pytest.mark.parametrize("kind", ["ras", "lps", "nrrd"])
def test_axial_slices_are_in_the_radiological_view(tmp_path, kind):
    """Down the screen is posterior, across is towards the patient's left, the slider goes up."""
    volume, meta = _volume(tmp_path, kind, 2)
    _, geometry = to_display(volume, meta)
    ras_step = (
        meta.affine[:3, :3]
        @ (
            display_to_file_index(np.eye(3), geometry)
            - display_to_file_index(np.zeros(3), geometry)
        ).T
    )
    assert ras_step[2, 0] > 0  # slider: inferior -> superior
    assert ras_step[1, 1] < 0  # rows: anterior at the top
    assert ras_step[0, 2] < 0  # columns: the patient's right on the screen's left
    assert "affine" not in geometry.layer_transforms()  # axis-aligned: no turn
    assert geometry.axis_ends == (("I", "S"), ("A", "P"), ("R", "L"))


def test_la2018_orientation_is_a_plain_transpose():
    """LA 2018 (LPS, x y z): an axial slice is image[:, :, z].T with row 0 at the top."""
    meta = VolumeMeta(affine=np.diag([-0.625, -0.625, 1.25, 1.0]), shape=(30, 20, 8))
    volume = np.arange(30 * 20 * 8, dtype=np.float32).reshape(30, 20, 8)
    display, geometry = to_display(volume, meta)
    assert geometry.axes == (2, 1, 0) and geometry.flipped == (False, False, False)
    assert np.array_equal(display[5], volume[:, :, 5].T)
    assert np.allclose(geometry.layer_transforms()["scale"], (1.25, 0.625, 0.625))


@pytest.mark.parametrize(
    ("direction", "plane", "labels"),
    [
        (np.eye(3)[:, [0, 2, 1]], "coronal", ("anterior→posterior", "superior→inferior")),
        (np.eye(3)[:, [1, 2, 0]], "sagittal", ("right→left", "superior→inferior")),
    ],
)
def test_coronal_and_sagittal_stacks(direction, plane, labels):
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag([0.6, 0.6, 2.0])  # slices along file axis 2
    meta = VolumeMeta(affine=affine, shape=SHAPE)
    volume = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    display, geometry = to_display(volume, meta)
    assert geometry.plane == plane and geometry.axis_labels[:2] == labels
    assert geometry.axes[0] == 2 and np.array_equal(from_display(display, geometry), volume)
    assert np.allclose(world_from_ras_of_labels(geometry.axis_labels), geometry.world_from_ras)
    assert world_from_ras_of_labels(("0", "1", "2")) is None


def test_overlay_is_drawn_as_napari_shows_it():
    """The PNG's slice panels are the display array's slices, marked with A/P/R/L."""
    meta_affine = np.diag([-0.625, -0.625, 1.25, 1.0])
    image = np.random.default_rng(0).random((40, 30, 12)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[10:20, 5:15, 3:9] = 1
    figure = render_overlay(image, mask, spacing=(0.625, 0.625, 1.25), affine=meta_affine)
    first = figure.axes[0]
    shown = first.images[0].get_array()
    display, _ = to_display(image, VolumeMeta(affine=meta_affine, shape=image.shape))
    index = int(first.get_title().split()[2])
    assert np.array_equal(np.asarray(shown), display[index])
    assert {t.get_text() for t in first.texts} == {"A", "P", "R", "L"}


def test_reader_gives_display_layers_and_labels_for_mask_files(tmp_path):
    """The npe2 reader (no napari needed): images as 'image', mask files (also an empty one)
    as 'labels', both in the display order; the writer takes a painted mask back, bit-exact."""
    from napari_la_dinov2._reader import napari_get_reader
    from napari_la_dinov2._writer import write_labels_layer

    affine = np.diag([-0.625, -0.625, 1.25, 1.0])
    rng = np.random.default_rng(0)
    files = {
        "image": rng.integers(0, 250, (20, 16, 6)).astype(np.uint8),
        "mask": (rng.random((20, 16, 6)) > 0.7).astype(np.uint8),
        "blank": np.zeros((20, 16, 6), np.uint8),
    }
    layers = {}
    for name, data in files.items():
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
        [layers[name]] = napari_get_reader(str(tmp_path / f"{name}.nii.gz"))(None)
    assert [layers[n][2] for n in files] == ["image", "labels", "labels"]
    assert layers["mask"][0].dtype == np.uint8 and layers["mask"][0].shape == (6, 16, 20)
    assert layers["image"][1]["axis_labels"][0] == "inferior→superior"
    data, kwargs, _ = layers["mask"]
    painted = np.array(data)  # napari's Labels hold their own array
    painted[2, 3:9, 4:7] = 5
    [written] = write_labels_layer(str(tmp_path / "out.nii.gz"), painted, kwargs)
    saved = nib.load(written)
    geometry = kwargs["metadata"]["la_dinov2_display"]
    assert np.array_equal(np.asarray(saved.dataobj), from_display(painted, geometry))
    assert np.array_equal(saved.affine, affine)
