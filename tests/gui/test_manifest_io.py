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
    assert (REPO / "napari.yaml").read_text(encoding="utf-8") == PACKAGE_MANIFEST.read_text(
        encoding="utf-8"
    )


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


def test_dicom_folder_opens_with_this_reader_without_naming_it(
    napari_settings, make_napari_viewer, tmp_path
):
    """Drag-and-drop, File > Open Folder and `napari FOLDER` open with no plugin named
    (``plugin=None``); napari's own reader accepts every folder too, so without a preference
    napari asks (MultipleReaderError). Once the plugin is activated, a DICOM folder comes in mm."""
    pytest.importorskip("pydicom")
    from napari.errors import MultipleReaderError, ReaderPluginError

    from napari_la_dinov2._reader import EVERY_FOLDER, activate
    from tests.dicom_series import oblique_affine, oblique_stored, series_datasets, write_files

    folder = tmp_path / "series"
    write_files(folder, series_datasets(oblique_stored(), oblique_affine()))
    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError):
        viewer.open(str(folder), plugin=None)
    activate()
    assert napari_settings.plugins.extension2reader == {EVERY_FOLDER: "napari-la-dinov2"}
    viewer.window._qt_viewer._qt_open([str(folder)], stack=False)  # what a drop calls
    [image] = viewer.layers
    assert image.source.reader_plugin == "napari-la-dinov2"
    assert np.allclose(sorted(image.scale), [0.5, 0.7, 2.5])  # mm, not napari's pixels
    assert image.metadata[META_KEY].affine is not None
    # A folder without a DICOM series: this reader says no, so napari offers its other readers
    # (in the GUI, its dialog; here, the error that opens it).
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("not an image")
    with pytest.raises(ReaderPluginError):
        viewer.open(str(other), plugin=None)


def test_folder_preference_leaves_the_users_choice(napari_settings):
    from napari_la_dinov2._reader import EVERY_FOLDER, prefer_this_reader_for_folders

    napari_settings.plugins.extension2reader = {"*": "napari"}
    assert not prefer_this_reader_for_folders(napari_settings)  # the user named one for everything
    napari_settings.plugins.extension2reader = {}
    assert prefer_this_reader_for_folders(napari_settings)
    napari_settings.plugins.extension2reader = {}  # removed in Preferences: it does not come back
    assert not prefer_this_reader_for_folders(napari_settings)
    assert EVERY_FOLDER not in napari_settings.plugins.extension2reader


def test_a_dicom_folder_read_in_pixels_is_refused_with_the_way_out(make_napari_viewer, tmp_path):
    """``viewer.open(folder)`` in a script forces napari's own reader (its default plugin is
    "napari"): the layer is in pixels, so the widgets refuse it and say how to open it in mm."""
    pytest.importorskip("pydicom")
    from napari_la_dinov2._layer_geometry import layer_volume
    from napari_la_dinov2.errors import InputError
    from tests.dicom_series import oblique_affine, oblique_stored, series_datasets

    folder = tmp_path / "series"
    folder.mkdir()
    for index, dataset in enumerate(series_datasets(oblique_stored(), oblique_affine())):
        dataset.save_as(folder / f"{index:03d}.dcm", enforce_file_format=True)  # napari needs .dcm
    [pixels] = make_napari_viewer().open(str(folder))
    assert pixels.source.reader_plugin == "napari" and np.allclose(pixels.scale, 1.0)
    with pytest.raises(InputError, match="napari's own reader.*choose LA DINOv2"):
        layer_volume(pixels)
