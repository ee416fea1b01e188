"""How a volume is put on screen: the acquisition plane on the canvas, the slices on the slider.

napari shows a layer's first axis on the slider and its last two on the canvas, rows going
down and columns going right. :func:`to_display` reorders (and flips, as views) a volume's
voxel axes so that the slider steps through the acquired slices (the coarsest voxel axis,
``VolumeMeta.through_plane_axis``) and each slice appears as radiologists read it:

- axial: anterior up, the patient's right on the screen's left (the radiological view);
- coronal: superior up, the patient's right on the screen's left;
- sagittal: superior up, anterior on the screen's left.

The plane is the anatomical direction the slice axis points closest to. World coordinates
(what napari reports under the cursor, and what its scale bar measures) are millimetres along
the three display directions, ``world = geometry.world_from_ras @ RAS``: for an axial
acquisition ``(S, P, L)``, the LPS position in reversed order, as ITK/SimpleITK arrays have it.
:func:`from_display` undoes the reorder exactly, so a mask drawn on screen goes back to the
file's own voxel order bit for bit. Pure numpy: the reader, writer, widgets and PNG overlay all
use it; nothing here imports napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Each display axis (slider, rows, columns) as (RAS axis, sign): world = sign * RAS[axis].
_FRAMES = {
    2: ("axial", ((2, 1), (1, -1), (0, -1))),  # I->S slider, A->P down, R->L across
    1: ("coronal", ((1, -1), (2, -1), (0, -1))),  # A->P slider, S->I down, R->L across
    0: ("sagittal", ((0, -1), (2, -1), (1, -1))),  # R->L slider, S->I down, A->P across
}
_DIRECTION_NAMES = {
    (0, 1): ("left", "right"),
    (0, -1): ("right", "left"),
    (1, 1): ("posterior", "anterior"),
    (1, -1): ("anterior", "posterior"),
    (2, 1): ("inferior", "superior"),
    (2, -1): ("superior", "inferior"),
}
ARROW = "→"


@dataclass(frozen=True, eq=False)
class DisplayGeometry:
    """How a file's voxel array is shown: ``display = flip(transpose(array, axes), flipped)``.

    ``axes[k]`` is the file axis shown as display axis k (0 slider, 1 rows, 2 columns);
    ``flipped[k]`` says it runs backwards; ``affine`` maps display voxel indices to world mm;
    ``world_from_ras`` (a signed permutation) maps RAS mm to world mm; ``axis_labels`` name the
    anatomical direction of each display axis, e.g. ``"anterior→posterior"``.
    """

    file_shape: tuple[int, int, int]
    axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    affine: np.ndarray
    world_from_ras: np.ndarray
    plane: str
    axis_labels: tuple[str, str, str]

    @property
    def display_shape(self) -> tuple[int, int, int]:
        return tuple(self.file_shape[a] for a in self.axes)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axis_ends(self) -> tuple[tuple[str, str], ...]:
        """Initials at the low and high end of each display axis, e.g. ``("A", "P")``."""
        return tuple(tuple(w[0].upper() for w in label.split(ARROW)) for label in self.axis_labels)

    def layer_transforms(self) -> dict[str, Any]:
        """napari ``scale`` and ``translate`` (plus ``affine`` for an oblique volume), so that
        ``world = affine @ (scale * index + translate)`` equals ``self.affine @ index``."""
        return layer_transforms(self.affine)


def layer_transforms(affine: np.ndarray) -> dict[str, Any]:
    """Split a voxel->world affine into napari's scale, translate and (if needed) affine.

    The scale is the voxel size, so measurements on the layer are in mm; a rotation is kept
    as an affine that turns about the origin: world = D (x - o) + o for physical point x.
    """
    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    origin = affine[:3, 3].copy()
    direction = affine[:3, :3] / spacing
    transforms: dict[str, Any] = {
        "scale": tuple(float(s) for s in spacing),
        "translate": tuple(float(t) for t in origin),
    }
    if not np.allclose(direction, np.eye(3), atol=1e-6):
        turn = np.eye(4)
        turn[:3, :3] = direction
        turn[:3, 3] = origin - direction @ origin
        transforms["affine"] = turn
    return transforms


def _in_plane_order(directions: np.ndarray, others: list[int], frame) -> list[int]:
    """The two in-plane file axes in (rows, columns) order: the pairing that best matches the
    frame's row and column directions (exact for axis-aligned volumes, nearest if oblique)."""
    (row_axis, _), (col_axis, _) = frame[1], frame[2]
    u, v = others
    keep = abs(directions[row_axis, u]) + abs(directions[col_axis, v])
    swap = abs(directions[row_axis, v]) + abs(directions[col_axis, u])
    return [u, v] if keep >= swap else [v, u]


def display_geometry(meta, slice_axis: int | None = None, shape=None) -> DisplayGeometry:
    """The :class:`DisplayGeometry` of a volume described by ``meta`` (a ``VolumeMeta``).

    ``slice_axis`` overrides the through-plane axis (default: ``meta.through_plane_axis()``);
    ``shape`` the array shape (default: ``meta.shape``).
    """
    shape = tuple(int(s) for s in (meta.shape if shape is None else shape))
    affine = np.asarray(meta.affine, dtype=float)
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    through = meta.through_plane_axis() if slice_axis is None else int(slice_axis)
    plane, frame = _FRAMES[int(np.argmax(np.abs(directions[:, through])))]
    others = [a for a in range(3) if a != through]
    axes = (through, *_in_plane_order(directions, others, frame))
    world_from_ras = np.zeros((3, 3))
    for k, (ras_axis, sign) in enumerate(frame):
        world_from_ras[k, ras_axis] = sign
    # A display axis runs backwards when its file axis points against the world direction.
    flipped = tuple(bool(world_from_ras[k] @ directions[:, axes[k]] < 0) for k in range(3))
    file_from_display = np.eye(4)
    file_from_display[:3, :3] = 0.0
    for k, (axis, flip) in enumerate(zip(axes, flipped)):
        file_from_display[axis, k] = -1.0 if flip else 1.0
        file_from_display[axis, 3] = shape[axis] - 1 if flip else 0.0
    world = np.eye(4)
    world[:3, :3] = world_from_ras
    labels = tuple(ARROW.join(_DIRECTION_NAMES[step]) for step in frame)
    return DisplayGeometry(
        file_shape=shape,
        axes=tuple(int(a) for a in axes),
        flipped=flipped,
        affine=world @ affine @ file_from_display,
        world_from_ras=world_from_ras,
        plane=plane,
        axis_labels=labels,
    )


def _flips(flipped) -> tuple[slice, ...]:
    return tuple(slice(None, None, -1) if flip else slice(None) for flip in flipped)


def to_display(array, meta, slice_axis: int | None = None):
    """``(display_array, geometry)``: ``array`` (file voxel order) as napari should show it.

    The display array is a view of ``array`` (transposed, maybe reversed), never a copy, so a
    Labels layer painted on it paints the array itself.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"a 3D volume is needed, not shape {array.shape}")
    geometry = display_geometry(meta, slice_axis, shape=array.shape)
    return display_view(array, geometry), geometry


def display_view(array, geometry: DisplayGeometry) -> np.ndarray:
    """``array`` (file order, e.g. a mask computed on the file's voxels) shown as ``geometry``
    says: a view, the same reorder as :func:`to_display`."""
    array = np.asarray(array)
    if tuple(array.shape) != geometry.file_shape:
        raise ValueError(f"shape {array.shape} is not the file shape {geometry.file_shape}")
    return np.transpose(array, geometry.axes)[_flips(geometry.flipped)]


def from_display(display_array, geometry: DisplayGeometry) -> np.ndarray:
    """The file-order array of a display array: the exact inverse of :func:`to_display`."""
    display_array = np.asarray(display_array)
    if tuple(display_array.shape) != geometry.display_shape:
        raise ValueError(
            f"shape {display_array.shape} is not the display shape {geometry.display_shape}"
        )
    unflipped = display_array[_flips(geometry.flipped)]
    return np.transpose(unflipped, np.argsort(geometry.axes))


def display_to_file_index(points, geometry: DisplayGeometry) -> np.ndarray:
    """File voxel indices (float, ``(..., 3)``) of display voxel indices ``points``."""
    points = np.asarray(points, dtype=float)
    out = np.empty_like(points)
    for k, (axis, flip) in enumerate(zip(geometry.axes, geometry.flipped)):
        value = points[..., k]
        out[..., axis] = geometry.file_shape[axis] - 1 - value if flip else value
    return out


def file_to_display_index(points, geometry: DisplayGeometry) -> np.ndarray:
    """Display voxel indices (float, ``(..., 3)``) of file voxel indices ``points``."""
    points = np.asarray(points, dtype=float)
    out = np.empty_like(points)
    for k, (axis, flip) in enumerate(zip(geometry.axes, geometry.flipped)):
        value = points[..., axis]
        out[..., k] = geometry.file_shape[axis] - 1 - value if flip else value
    return out


def world_from_ras_of_labels(axis_labels) -> np.ndarray | None:
    """``world_from_ras`` of a display frame named by ``axis_labels`` (as a layer made from a
    displayed one keeps them), or None when they are not this module's labels."""
    for _, frame in _FRAMES.values():
        if tuple(axis_labels or ())[-3:] == tuple(ARROW.join(_DIRECTION_NAMES[s]) for s in frame):
            matrix = np.zeros((3, 3))
            for k, (ras_axis, sign) in enumerate(frame):
                matrix[k, ras_axis] = sign
            return matrix
    return None
