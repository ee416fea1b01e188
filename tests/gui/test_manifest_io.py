"""The npe2 manifest, the reader, the writer and the sample data, through a real viewer."""

from __future__ import annotations

import importlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_la_dinov2 import read_volume
from napari_la_dinov2._layer_geometry import GEOMETRY_KEY, META_KEY
from napari_la_dinov2.display import display_to_file_index, from_display

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[2]
PACKAGE_MANIFEST = REPO / "src" / "napari_la_dinov2" / "napari.yaml"


def test_top_level_manifest_is_the_packaged_one():
    assert (REPO / "napari.yaml").read_text() == PACKAGE_MANIFEST.read_text()


def test_manifest_validates_and_every_python_name_resolves():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(PACKAGE_MANIFEST)
    manifest.validate_imports()  # raises if a python_name does not import
    names = [c.python_name for c in manifest.contributions.commands]
    assert len(names) == 9
    for name in names:
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr))
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment",
        "Fine-tune",
        "Few-shot",
        "Compare",
        "Correct",
        "Surface",
    }
    # The installed entry point finds the same manifest.
    assert PluginManifest.from_distribution("napari-la-dinov2").name == "napari-la-dinov2"


def _oblique_nifti(path: Path) -> np.ndarray:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 200, (20, 18, 6)).astype(np.uint8)
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.625, 0.625, 1.25])
    affine[:3, 3] = [-30.0, 12.5, 40.0]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine


def test_reader_writer_round_trip_through_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    source = tmp_path / "oblique.nii.gz"
    affine = _oblique_nifti(source)
    [image] = viewer.open(str(source), plugin="napari-la-dinov2")
    geometry = image.metadata[GEOMETRY_KEY]
    assert image.data.shape == (6, 18, 20)  # the slices (z, 1.25 mm) on the slider
    # Physical space: a displayed voxel maps to its file voxel's position (world = (S, P, L)).
    index = np.array([2.0, 5.0, 3.0])
    file_index = display_to_file_index(index, geometry)
    ras = (affine @ [*file_index, 1])[:3]
    assert np.allclose(image.data_to_world(index), geometry.world_from_ras @ ras)
    assert image.metadata[META_KEY].source == str(source)

    mask = (image.data > 100).astype(np.uint8)  # drawn on the display grid
    from napari_la_dinov2._layer_geometry import labels_layer_kwargs

    labels = viewer.add_labels(mask, **labels_layer_kwargs(image, name="mask"))
    target = tmp_path / "mask.nii.gz"
    written = labels.save(str(target), plugin="napari-la-dinov2")
    assert written == [str(target)]
    saved = nib.load(str(target))
    assert np.array_equal(np.asarray(saved.dataobj), from_display(mask, geometry))
    assert np.allclose(saved.affine, affine)

    [reopened] = viewer.open(str(target), plugin="napari-la-dinov2")
    assert np.allclose(reopened.affine.affine_matrix, image.affine.affine_matrix)
    assert np.allclose(reopened.scale, image.scale)


def test_writer_without_meta_uses_layer_transforms(tmp_path):
    from napari_la_dinov2._writer import write_labels_layer

    mask = np.zeros((10, 12, 4), np.uint8)
    mask[2:5, 3:7, 1:3] = 1
    attributes = {"scale": (0.5, 0.5, 2.0), "translate": (10.0, -4.0, 3.0), "metadata": {}}
    [path] = write_labels_layer(str(tmp_path / "drawn"), mask, attributes)
    assert path.endswith(".nii.gz")
    _, meta = read_volume(path)
    assert np.allclose(meta.spacing, (0.5, 0.5, 2.0))
    assert np.allclose(meta.affine[:3, 3], (10.0, -4.0, 3.0))


def test_reader_says_why_a_file_of_ours_cannot_be_read(tmp_path, make_napari_viewer):
    import nibabel as nib

    from napari_la_dinov2._reader import napari_get_reader
    from napari_la_dinov2.errors import InputError

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")  # a text file renamed .nii.gz
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), flat)
    assert napari_get_reader(str(tmp_path / "photo.png")) is None  # not ours: other readers
    viewer = make_napari_viewer()
    for path, why in ((broken, "corrupt or not an image"), (flat, "a 3D volume is needed")):
        read = napari_get_reader(str(path))  # never raises itself
        with pytest.raises(InputError, match=why):
            read(str(path))
        # What napari shows on File > Open: our sentence, not "the reader refused the file".
        with pytest.raises(Exception, match=why) as raised:
            viewer.open(str(path), plugin="napari-la-dinov2")
        assert "refused" not in str(raised.value)


def test_sample_data_opens_with_true_mask(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-la-dinov2", "lge_phantom")
    image, mask = layers
    # Shown like a file opened with the reader: the 44 slices of 1.25 mm on the slider.
    assert image.data.shape == mask.data.shape == (44, 120, 144)
    assert np.allclose(image.scale, (1.25, 0.625, 0.625))
    assert viewer.dims.axis_labels == ("inferior→superior", "anterior→posterior", "right→left")
    assert set(np.unique(mask.data)) == {0, 1}
    # The atrium is brighter than its surroundings, like blood pool on LGE.
    assert image.data[mask.data == 1].mean() > image.data[mask.data == 0].mean() + 40
