"""Surface meshes of masks (mesh.py) and the `la-dinov2 mesh` command, on synthetic ellipsoids
voxelised in an oblique, anisotropic, mirrored, translated grid, so that every part of the
affine shows up in the coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_la_dinov2.cli import main
from napari_la_dinov2.errors import InputError
from napari_la_dinov2.mesh import MESH_SUFFIXES, mesh_from_mask, write_mesh
from napari_la_dinov2.scoring.metrics import la_volume_ml
from napari_la_dinov2.volume_files import VolumeMeta, write_labels

# The ellipsoid's centre in RAS mm: far from the origin, so an LPS/RAS mix-up moves it by 200 mm.
CENTRE_RAS = np.array([-100.0, 40.0, 20.0])
# The ellipsoid's own axes (columns) in RAS: not aligned with the grid nor with RAS.
ELLIPSOID_AXES = Rotation.from_euler("zyx", [40, -25, 10], degrees=True).as_matrix()


def oblique_meta(shape=(110, 120, 64), spacing=(0.8, 0.7, 1.5)) -> VolumeMeta:
    """A grid rotated about all three axes, with anisotropic voxels, the first axis mirrored
    (negative determinant, as in many NIfTI files) and its centre at CENTRE_RAS."""
    rotation = Rotation.from_euler("xyz", [20, 30, -15], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(np.asarray(spacing) * [-1, 1, 1])
    affine[:3, 3] = CENTRE_RAS - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return VolumeMeta(affine=affine, shape=tuple(shape))


def voxel_centres_ras(meta: VolumeMeta) -> np.ndarray:
    index = np.stack(np.meshgrid(*map(np.arange, meta.shape), indexing="ij"), -1)
    return index.reshape(-1, 3) @ meta.affine[:3, :3].T + meta.affine[:3, 3]


def ellipsoid_mask(meta: VolumeMeta, semi_axes, centre=CENTRE_RAS) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (semi-axes in mm along ELLIPSOID_AXES)."""
    local = (voxel_centres_ras(meta) - centre) @ ELLIPSOID_AXES
    inside = ((local / np.asarray(semi_axes, float)) ** 2).sum(axis=1) <= 1.0
    return inside.reshape(meta.shape).astype(np.uint8)


def mask_centroid_ras(mask: np.ndarray, meta: VolumeMeta) -> np.ndarray:
    return voxel_centres_ras(meta)[mask.reshape(-1) != 0].mean(axis=0)


@pytest.fixture(scope="module")
def oblique():
    meta = oblique_meta()
    mask = ellipsoid_mask(meta, (30.0, 20.0, 15.0))
    return mask, meta, mesh_from_mask(mask, meta)


def test_mesh_is_closed_single_and_outward(oblique):
    _, _, mesh = oblique
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.volume > 0
    # A convex body: every outward normal points away from the centre.
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - mesh.center_mass)
    assert (outward > 0).all()


def test_mesh_volume_matches_voxel_volume(oblique):
    mask, meta, mesh = oblique
    voxel_ml = la_volume_ml(mask, meta.spacing)
    assert voxel_ml == pytest.approx(4 / 3 * np.pi * 30 * 20 * 15 / 1000, rel=0.01)
    assert mesh.volume / 1000 == pytest.approx(voxel_ml, rel=0.03)


def test_mesh_centroid_is_the_mask_centroid_in_lps_and_ras(oblique):
    mask, meta, mesh = oblique
    centroid_ras = mask_centroid_ras(mask, meta)
    centroid_lps = centroid_ras * [-1, -1, 1]
    assert mesh.metadata["coordinate_system"] == "LPS"
    assert np.linalg.norm(mesh.center_mass - centroid_lps) < 1.0

    ras = mesh_from_mask(mask, meta, ras=True)
    assert ras.metadata["coordinate_system"] == "RAS"
    assert np.linalg.norm(ras.center_mass - centroid_ras) < 1.0
    # Same surface, x and y negated: LPS is RAS with its first two axes flipped.
    np.testing.assert_allclose(ras.vertices * [-1, -1, 1], mesh.vertices, atol=1e-9)


def test_only_the_largest_part_is_meshed_and_cavities_are_filled():
    meta = oblique_meta()
    big = ellipsoid_mask(meta, (30.0, 20.0, 15.0))
    cavity = ellipsoid_mask(meta, (8.0, 6.0, 6.0))
    island = ellipsoid_mask(meta, (6.0, 6.0, 6.0), centre=CENTRE_RAS + [0.0, 0.0, 40.0])
    assert not (island & big).any() and island.sum() > 0.1 * cavity.sum()
    mask = (big & ~cavity) | island
    mesh = mesh_from_mask(mask, meta)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert mesh.volume / 1000 == pytest.approx(la_volume_ml(big, meta.spacing), rel=0.03)


def test_the_part_kept_is_the_largest_by_volume_not_by_triangles():
    meta = VolumeMeta.from_spacing((70, 70, 40))
    mask = np.zeros(meta.shape, np.uint8)
    mask[5:65, 5:65, 3] = 1  # a thin plate: 3600 mm3 but ~3x the cube's triangles
    mask[20:40, 20:40, 10:30] = 1  # a cube: 8000 mm3
    mesh = mesh_from_mask(mask, meta)
    assert mesh.volume == pytest.approx(8000, rel=0.05)


def test_parts_touching_at_an_edge_are_one_surface_at_a_corner_two():
    meta = VolumeMeta.from_spacing((30, 30, 30))
    edge = np.zeros(meta.shape, np.uint8)
    edge[5:15, 5:15, 5:15] = 1
    corner = edge.copy()
    edge[15:22, 15:22, 5:15] = 1  # shares the edge x=y=15 with the first cube
    corner[15:22, 15:22, 15:22] = 1  # shares only the corner (15, 15, 15)
    both = mesh_from_mask(edge, meta)
    assert both.is_watertight and both.volume == pytest.approx(1000 + 490, rel=0.05)
    larger = mesh_from_mask(corner, meta)
    assert larger.is_watertight and larger.volume == pytest.approx(1000, rel=0.05)


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("ras", [False, True])
def test_normals_point_outward_whatever_the_handedness(mirrored, ras):
    # A mirrored grid or the RAS/LPS choice changes the affine's handedness, which turns
    # marching cubes' triangles inside out unless the winding is fixed.
    meta = VolumeMeta.from_spacing((30, 30, 20), (-1.0 if mirrored else 1.0, 1.0, 1.5))
    mask = np.zeros(meta.shape, np.uint8)
    mask[8:22, 6:24, 5:15] = 1
    mesh = mesh_from_mask(mask, meta, ras=ras)
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - mesh.center_mass)
    assert mesh.volume > 0 and (outward > 0).mean() > 0.99


def test_a_mask_cut_by_the_volume_border_still_gives_a_closed_mesh():
    meta = VolumeMeta.from_spacing((40, 40, 20), (1.0, 1.0, 2.0))
    mask = np.zeros(meta.shape, np.uint8)
    mask[:15, 10:30, 5:15] = 1  # touches the start of axis 0
    mesh = mesh_from_mask(mask, meta, ras=True)
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.volume / 1000 == pytest.approx(la_volume_ml(mask, meta.spacing), rel=0.05)


def test_empty_or_misshapen_masks_are_input_errors():
    meta = VolumeMeta.from_spacing((10, 10, 10))
    with pytest.raises(InputError, match="empty"):
        mesh_from_mask(np.zeros(meta.shape), meta)
    with pytest.raises(InputError, match="shape"):
        mesh_from_mask(np.ones((10, 10, 9)), meta)


def _reload(path):
    """(vertex count, face count, enclosed volume) of a mesh file, read by another library."""
    import meshio
    import trimesh

    if path.suffix == ".vtk":
        data = meshio.read(path)
        faces = data.cells_dict["triangle"]
        mesh = trimesh.Trimesh(data.points, faces, process=False)
    else:
        mesh = trimesh.load(path, force="mesh")
    return len(mesh.vertices), len(mesh.faces), mesh.volume


@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_each_format_round_trips(oblique, tmp_path, suffix):
    _, _, mesh = oblique
    path = write_mesh(mesh, tmp_path / f"la{suffix}")
    vertices, faces, volume = _reload(path)
    assert (vertices, faces) == (len(mesh.vertices), len(mesh.faces))
    assert volume == pytest.approx(mesh.volume, rel=1e-4)  # STL/PLY store float32
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"la{suffix}"]  # no temporary left


def test_write_refuses_an_existing_file_unless_overwrite(oblique, tmp_path):
    _, _, mesh = oblique
    path = tmp_path / "la.stl"
    path.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists"):
        write_mesh(mesh, path)
    assert path.read_bytes() == b"keep me"
    write_mesh(mesh, path, overwrite=True)
    assert _reload(path)[1] == len(mesh.faces)


def test_unknown_suffix_is_one_sentence_naming_the_suffixes(oblique, tmp_path):
    _, _, mesh = oblique
    with pytest.raises(InputError) as error:
        write_mesh(mesh, tmp_path / "la.off")
    message = str(error.value)
    assert all(suffix in message for suffix in MESH_SUFFIXES) and message.count(". ") == 0
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_neither_file_nor_temporary(oblique, tmp_path, monkeypatch):
    _, _, mesh = oblique

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(mesh), "export", broken)
    with pytest.raises(OSError, match="disk full"):
        write_mesh(mesh, tmp_path / "la.ply")
    assert list(tmp_path.iterdir()) == []


# --- the `la-dinov2 mesh` command ---


@pytest.fixture
def mask_file(tmp_path):
    meta = oblique_meta()
    path = tmp_path / "la.nii.gz"
    write_labels(path, ellipsoid_mask(meta, (30.0, 20.0, 15.0)), meta)
    return path


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("la-dinov2: error:")
    return lines[0]


def test_cli_writes_the_mesh_and_prints_the_measures(mask_file, tmp_path, capsys):
    out = tmp_path / "la.stl"
    assert main(["mesh", str(mask_file), "--out", str(out)]) == 0
    header, values = capsys.readouterr().out.strip().splitlines()
    row = dict(zip(header.split("\t"), map(float, values.split("\t"))))
    assert row["volume_ml"] == pytest.approx(4 / 3 * np.pi * 30 * 20 * 15 / 1000, rel=0.01)
    assert row["max_diameter_mm"] == pytest.approx(60.0, abs=1.5)
    vertices, faces, volume = _reload(out)
    assert volume / 1000 == pytest.approx(row["volume_ml"], rel=0.03)


@pytest.mark.parametrize("flags, sign", [([], [-1, -1, 1]), (["--ras"], [1, 1, 1])])
def test_cli_mesh_is_in_lps_unless_ras(mask_file, tmp_path, flags, sign):
    import trimesh

    from napari_la_dinov2.volume_files import read_labels_with_meta

    mask, meta = read_labels_with_meta(mask_file)
    out = tmp_path / "la.ply"
    assert main(["mesh", str(mask_file), "--out", str(out), *flags]) == 0
    centre = trimesh.load(out, force="mesh").center_mass
    assert np.linalg.norm(centre - mask_centroid_ras(mask, meta) * sign) < 1.0


def test_cli_refuses_an_existing_output_without_overwrite(mask_file, tmp_path, capsys):
    out = tmp_path / "la.ply"
    out.write_bytes(b"keep me")
    assert main(["mesh", str(mask_file), "--out", str(out)]) == 2
    assert "already exists" in _one_error_line(capsys)
    assert out.read_bytes() == b"keep me"
    assert main(["mesh", str(mask_file), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"


@pytest.mark.parametrize("name", ["la.off", "la"])
def test_cli_refuses_an_unknown_suffix(mask_file, tmp_path, capsys, name):
    before = sorted(tmp_path.iterdir())
    assert main(["mesh", str(mask_file), "--out", str(tmp_path / name)]) == 2
    assert ".stl" in _one_error_line(capsys)
    assert sorted(tmp_path.iterdir()) == before


def test_cli_refuses_an_empty_mask(tmp_path, capsys):
    meta = oblique_meta(shape=(20, 20, 12))
    write_labels(tmp_path / "empty.nii.gz", np.zeros(meta.shape, np.uint8), meta)
    assert main(["mesh", str(tmp_path / "empty.nii.gz"), "--out", str(tmp_path / "la.obj")]) == 2
    assert "empty" in _one_error_line(capsys)
    assert not (tmp_path / "la.obj").exists()


def test_cli_asks_which_label_of_a_multi_label_mask(tmp_path, capsys):
    meta = oblique_meta()
    labels = ellipsoid_mask(meta, (30.0, 20.0, 15.0)) + ellipsoid_mask(meta, (8.0, 6.0, 6.0))
    write_labels(tmp_path / "two.nii.gz", labels, meta)
    out = tmp_path / "la.vtk"
    assert main(["mesh", str(tmp_path / "two.nii.gz"), "--out", str(out)]) == 2
    assert "--label" in _one_error_line(capsys) and not out.exists()
    assert main(["mesh", str(tmp_path / "two.nii.gz"), "--out", str(out), "--label", "3"]) == 2
    assert "no label 3" in _one_error_line(capsys) and not out.exists()
    assert main(["mesh", str(tmp_path / "two.nii.gz"), "--out", str(out), "--label", "2"]) == 0
    assert _reload(out)[2] / 1000 == pytest.approx(4 / 3 * np.pi * 8 * 6 * 6 / 1000, rel=0.1)


def test_cli_refuses_a_mask_off_its_image_grid(mask_file, tmp_path, capsys):
    meta = oblique_meta(shape=(110, 120, 63))
    image = np.random.default_rng(0).random(meta.shape).astype(np.float32)
    import nibabel as nib

    nib.save(nib.Nifti1Image(image, meta.affine), str(tmp_path / "image.nii.gz"))
    out = tmp_path / "la.stl"
    args = ["mesh", str(mask_file), "--out", str(out), "--image", str(tmp_path / "image.nii.gz")]
    assert main(args) == 2
    assert "shape" in _one_error_line(capsys) and not out.exists()
