"""File > Open shows the acquisition plane; what is painted there is saved in the file's order."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_la_dinov2._layer_geometry import GEOMETRY_KEY, META_KEY
from napari_la_dinov2.display import display_to_file_index, display_view
from napari_la_dinov2.volume_files import read_volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-la-dinov2"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AXIAL_LABELS = ("inferior→superior", "anterior→posterior", "right→left")


def _paint(layer: Labels) -> None:
    """Set voxels in the Labels layer's data as a brush would: asymmetric on every axis, so a
    wrong transpose or flip on the way back cannot give the same file."""
    data = layer.data
    k, rows, cols = data.shape
    data[k // 3, rows // 4 : rows // 2, cols // 5 : cols // 3] = 2
    data[k - 2, 1:4, cols - 6 : cols - 1] = 3
    data[0, 0, 0] = 1
    layer.refresh()


def _expected(file_labels: np.ndarray, geometry) -> np.ndarray:
    """The same painting applied in the file's order through the display view."""
    expected = file_labels.copy()
    shown = display_view(expected, geometry)
    k, rows, cols = shown.shape
    shown[k // 3, rows // 4 : rows // 2, cols // 5 : cols // 3] = 2
    shown[k - 2, 1:4, cols - 6 : cols - 1] = 3
    shown[0, 0, 0] = 1
    return expected


def _case(real_data_dir) -> tuple[Path, Path]:
    case_id = "CB5P5W7X310NIIVU7UZV"
    if not (real_data_dir / "images" / f"{case_id}.nii.gz").exists():
        case_id = (real_data_dir / "cases.txt").read_text(encoding="utf-8").split()[0]
    return (
        real_data_dir / "images" / f"{case_id}.nii.gz",
        real_data_dir / "labels" / f"{case_id}.nii.gz",
    )


def test_real_case_opens_in_the_axial_plane(make_napari_viewer, real_data_dir):
    image_path, label_path = _case(real_data_dir)
    volume, meta = read_volume(image_path)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(image_path), plugin=PLUGIN)
    [mask] = viewer.open(str(label_path), plugin=PLUGIN)
    assert isinstance(image, Image) and isinstance(mask, Labels)
    assert mask.data.dtype == np.uint8 and set(np.unique(mask.data)) == {0, 1}
    # The 88 slices of 1.25 mm on the slider; an axial slice is image[:, :, z].T (LPS file).
    assert meta.through_plane_axis() == 2 and image.data.shape[0] == volume.shape[2]
    assert np.array_equal(image.data[40], volume[:, :, 40].T)
    assert np.allclose(image.scale, (1.25, 0.625, 0.625))
    assert viewer.dims.axis_labels == AXIAL_LABELS and viewer.dims.not_displayed == (0,)
    # Anterior up: rows go posterior; the patient's right on the left: columns go left.
    geometry = image.metadata[GEOMETRY_KEY]
    step = [np.asarray(image.data_to_world(p)) for p in ([0, 0, 0], [0, 1, 0], [0, 0, 1])]
    ras_rows = geometry.world_from_ras.T @ (step[1] - step[0])
    ras_cols = geometry.world_from_ras.T @ (step[2] - step[0])
    assert ras_rows[1] < 0 and ras_cols[0] < 0
    # The Segment widget offers the image only, not the mask.
    from napari_la_dinov2._widgets.segment import SegmentWidget

    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    assert list(widget.image.choices) == [image]


def test_painted_mask_saved_in_file_order_nifti(make_napari_viewer, real_data_dir, tmp_path):
    image_path, label_path = _case(real_data_dir)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(image_path), plugin=PLUGIN)
    [mask] = viewer.open(str(label_path), plugin=PLUGIN)
    file_labels = np.asarray(nib.load(str(label_path)).dataobj)
    _paint(mask)
    target = tmp_path / "corrected.nii.gz"
    assert mask.save(str(target), plugin=PLUGIN) == [str(target)]
    saved = nib.load(str(target))
    expected = _expected(file_labels, image.metadata[GEOMETRY_KEY])
    assert np.array_equal(np.asarray(saved.dataobj), expected)
    assert np.array_equal(saved.affine, nib.load(str(label_path)).affine)


def _lps_nrrd(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """An LPS NRRD whose slice axis is the file's FIRST axis (2.0 mm), stored in an order a
    scanner might use: axis 1 points anterior, axis 2 points to the patient's right."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 250, (9, 30, 25)).astype(np.int16)
    labels = np.zeros(image.shape, np.uint8)
    labels[3:6, 10:20, 5:12] = 1
    directions = np.array([[0, 0, 2.0], [0, -0.7, 0], [-0.7, 0, 0]])  # rows: axes, LPS
    header = {
        "space": "left-posterior-superior",
        "space directions": directions,
        "space origin": np.array([12.0, -30.5, 4.25]),
    }
    nrrd.write(str(folder / "image.nrrd"), image, header)
    nrrd.write(str(folder / "mask.nrrd"), labels, header)
    return folder / "image.nrrd", folder / "mask.nrrd", labels


def test_painted_mask_saved_in_file_order_lps_nrrd(make_napari_viewer, tmp_path):
    image_path, label_path, file_labels = _lps_nrrd(tmp_path)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(image_path), plugin=PLUGIN)
    [mask] = viewer.open(str(label_path), plugin=PLUGIN)
    assert isinstance(mask, Labels) and image.data.shape == mask.data.shape == (9, 30, 25)
    geometry = image.metadata[GEOMETRY_KEY]
    assert geometry.axes[0] == 0 and geometry.flipped == (False, True, True)
    _paint(mask)
    target = tmp_path / "corrected.nrrd"
    mask.save(str(target), plugin=PLUGIN)
    saved, header = nrrd.read(str(target))
    assert np.array_equal(saved, _expected(file_labels, geometry))
    assert np.allclose(
        header["space directions"], nrrd.read_header(str(label_path))["space directions"]
    )


def _dicom_series(folder: Path, slices: int = 12) -> None:
    """An axial MR series: 12 slices of 30 x 25 pixels, 0.7 mm pixels, 2 mm apart."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.random.default_rng(2).integers(0, 1000, (slices, 30, 25)).astype(np.uint16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(slices):
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = MRImageStorage
        file_meta.MediaStorageSOPInstanceUID = generate_uid()
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = file_meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.InstanceNumber = "MR", "phantom", k + 1
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Rows, ds.Columns, ds.PixelSpacing, ds.SliceThickness = 30, 25, [0.7, 0.7], 2.0
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [-8.0, 4.0, 2.0 * k]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels[k].tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def test_painted_mask_saved_in_file_order_dicom(make_napari_viewer, tmp_path):
    from napari_la_dinov2._layer_geometry import labels_layer_kwargs
    from napari_la_dinov2._reader import napari_get_reader
    from napari_la_dinov2.display import from_display

    folder = tmp_path / "series"
    folder.mkdir()
    pytest.importorskip("pydicom")
    _dicom_series(folder)
    if napari_get_reader(str(folder)) is None:
        pytest.skip("the reader does not open DICOM directories yet (io.read_volume)")
    volume, meta = read_volume(folder)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(folder), plugin=PLUGIN)
    geometry = image.metadata[GEOMETRY_KEY]
    assert image.data.shape[0] == 12 and np.array_equal(from_display(image.data, geometry), volume)
    mask = viewer.add_labels(
        np.zeros(image.data.shape, np.uint8), **labels_layer_kwargs(image, "drawn")
    )
    _paint(mask)
    target = tmp_path / "corrected.nii.gz"
    mask.save(str(target), plugin=PLUGIN)
    saved = nib.load(str(target))
    assert np.array_equal(np.asarray(saved.dataobj), from_display(mask.data, geometry))
    assert np.allclose(saved.affine, meta.affine)


def test_empty_mask_opens_as_labels(make_napari_viewer, tmp_path):
    path = tmp_path / "blank.nii.gz"
    affine = np.diag([-0.625, -0.625, 1.25, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((20, 16, 6), np.uint8), affine), str(path))
    viewer = make_napari_viewer()
    [blank] = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(blank, Labels) and blank.data.shape == (6, 16, 20)
    assert blank.metadata[META_KEY].shape == (20, 16, 6)


def test_new_labels_layer_is_saved_at_its_true_position(make_napari_viewer, tmp_path):
    """napari's New Labels copies the image's transforms and axis labels, not its metadata: the
    file it saves is in display order, with an affine that puts each voxel where it is shown."""
    image_path, _, _ = _lps_nrrd(tmp_path)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(image_path), plugin=PLUGIN)
    viewer._new_labels()
    drawn = viewer.layers[-1]
    assert isinstance(drawn, Labels) and GEOMETRY_KEY not in drawn.metadata
    drawn.data[4, 10:20, 3:9] = 1
    target = tmp_path / "drawn.nii.gz"
    drawn.save(str(target), plugin=PLUGIN)
    saved = nib.load(str(target))
    assert np.array_equal(np.asarray(saved.dataobj), drawn.data)
    meta, geometry = image.metadata[META_KEY], image.metadata[GEOMETRY_KEY]
    for index in ([0, 0, 0], [4, 12, 7], [8, 29, 24]):
        file_index = display_to_file_index(index, geometry)
        assert np.allclose(saved.affine @ [*index, 1], meta.affine @ [*file_index, 1])
