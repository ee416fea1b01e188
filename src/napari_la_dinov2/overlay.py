"""A PNG overlay of an image and its left-atrium mask, for a quick look without a viewer.

A few slices along the slice axis where the mask is largest, plus one orthogonal cut through the
mask's centre, each with the mask's contour; the volume is drawn as napari shows it
(``display.to_display``: axial slices in the radiological view, anterior up, the patient's
right on the left, edges marked with anatomical initials), pixels at their physical aspect,
and the title gives the model and the LA volume. Matplotlib's Agg backend
through ``Figure`` directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from .display import display_view, to_display
from .outputs import OutputGroup, atomic_write
from .scoring.metrics import la_volume_ml
from .volume_files import VolumeMeta

CONTOUR_COLOUR = "#ff3b30"
# The plane of a cut across the rows of each kind of stack (rows: A->P axial, S->I otherwise).
_CUT_PLANE = {"axial": "coronal", "coronal": "axial", "sagittal": "axial"}
FILL_ALPHA = 0.25


def choose_slices(mask: np.ndarray, slice_axis: int, count: int = 3) -> list[int]:
    """Indices of ``count`` slices where the mask is largest, spread out (not all neighbours).

    Greedy: take the slice of largest area, then the next largest at least ``extent/(2*count)``
    slices away from those taken. An empty mask gives evenly spaced central slices.
    """
    areas = np.count_nonzero(
        np.moveaxis(mask, slice_axis, 0).reshape(mask.shape[slice_axis], -1), axis=1
    )
    total = len(areas)
    count = max(1, min(count, total))
    occupied = np.flatnonzero(areas)
    if occupied.size == 0:
        return sorted({int(round(v)) for v in np.linspace(total * 0.25, total * 0.75, count)})
    gap = max(1, (occupied[-1] - occupied[0] + 1) // (2 * count))
    chosen: list[int] = []
    for index in np.argsort(-areas, kind="stable"):
        if areas[index] == 0:
            break
        if all(abs(int(index) - c) >= gap for c in chosen):
            chosen.append(int(index))
        if len(chosen) == count:
            break
    return sorted(chosen)


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, (1.0, 99.5))
    return float(low), float(high if high > low else low + 1.0)


def _draw(ax, plane, plane_mask, aspect: float, window, ends, title: str, origin: str) -> None:
    """Draw ``plane[row, column]`` as napari does (row 0 at the top for ``origin="upper"``),
    with the anatomical initials of its edges: ``ends = ((top, bottom), (left, right))``."""
    shown = dict(origin=origin, aspect=aspect)
    ax.imshow(plane, cmap="gray", vmin=window[0], vmax=window[1], **shown)
    if plane_mask.any():
        fill = np.ma.masked_where(plane_mask == 0, plane_mask)
        ax.imshow(fill, cmap="autumn", alpha=FILL_ALPHA, vmin=0, vmax=1, **shown)
        ax.contour(
            plane_mask.astype(np.float32), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=1.0
        )
    (top, bottom), (left, right) = ends
    marker = dict(transform=ax.transAxes, color="#ffd60a", fontsize=9, fontweight="bold")
    ax.text(0.5, 0.98, top, ha="center", va="top", **marker)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **marker)
    ax.text(0.02, 0.5, left, ha="left", va="center", **marker)
    ax.text(0.98, 0.5, right, ha="right", va="center", **marker)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _meta_for(shape, spacing, axcodes, affine) -> VolumeMeta:
    """The geometry the overlay shows: the affine if given, else the nearest axis-aligned one
    from the axis codes (what the command line passes), else RAS."""
    if affine is not None:
        return VolumeMeta(affine=np.asarray(affine, dtype=float), shape=tuple(shape))
    if axcodes is None:
        return VolumeMeta.from_spacing(shape, spacing)
    matrix = np.eye(4)
    matrix[:3, :3] = 0.0
    for axis, (code, size) in enumerate(zip(axcodes, spacing)):
        ras_axis, sign = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1)}.get(
            code, (2, 1 if code == "S" else -1)
        )
        matrix[ras_axis, axis] = sign * float(size)
    return VolumeMeta(affine=matrix, shape=tuple(shape))


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    spacing=(1.0, 1.0, 1.0),
    slice_axis: int = 2,
    title: str = "",
    count: int = 3,
    axcodes: tuple[str, str, str] | None = None,
    affine: np.ndarray | None = None,
):
    """A matplotlib ``Figure``: ``count`` slices + one orthogonal view, contoured, titled.

    ``image`` and ``mask`` are in the file's voxel order; they are drawn as napari shows them
    (``display.to_display``): slices across ``slice_axis`` numbered as on napari's slider, axial
    ones in the radiological view, edges marked with anatomical initials.
    """
    from matplotlib.figure import Figure

    image, mask = np.asarray(image), np.asarray(mask) > 0
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be the same 3D shape")
    meta = _meta_for(image.shape, spacing, axcodes, affine)
    image, geometry = to_display(image, meta, slice_axis)
    mask = display_view(mask, geometry)
    step, row, column = geometry.spacing
    ends = geometry.axis_ends
    window = _window(image)
    slices = choose_slices(mask, 0, count)

    figure = Figure(figsize=(3.2 * (len(slices) + 1), 3.8), layout="constrained")
    axes = figure.subplots(1, len(slices) + 1, squeeze=False)[0]
    for ax, index in zip(axes, slices):
        area = mask[index].sum() * row * column / 100.0  # mm^2 -> cm^2
        title_k = f"{geometry.plane} slice {index} ({area:.1f} cm²)"
        _draw(ax, image[index], mask[index], row / column, window, ends[1:], title_k, "upper")
    # Orthogonal cut through the mask's centre (the volume's centre for an empty mask), the
    # slices stacked vertically so the through-plane coverage and its steps are visible.
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.asarray(mask.shape) / 2
    cut = int(centre[1])
    superior_up = ends[0][1] == "S"  # an axial stack: superior up, as in a coronal view
    vertical = ends[0][::-1] if superior_up else ends[0]
    ax = axes[-1]
    _draw(
        ax,
        image[:, cut, :],
        mask[:, cut, :],
        step / column,
        window,
        (vertical, ends[2]),
        f"{_CUT_PLANE[geometry.plane]} cut at row {cut}",
        "lower" if superior_up else "upper",
    )
    for index in slices:
        ax.axhline(index, color="#30a0ff", linewidth=0.6, linestyle="--")
    volume_ml = la_volume_ml(mask, geometry.spacing)
    figure.suptitle(f"{title}  |  LA volume {volume_ml:.1f} mL".strip(" |"), fontsize=11)
    return figure


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    spacing=(1.0, 1.0, 1.0),
    slice_axis: int = 2,
    title: str = "",
    count: int = 3,
    axcodes: tuple[str, str, str] | None = None,
    affine: np.ndarray | None = None,
    overwrite: bool = False,
    dpi: int = 110,
    group: OutputGroup | None = None,
) -> Path:
    """Render the overlay and write it as a PNG atomically (never half a file), or stage it in
    ``group`` to appear with the other files of the group."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        from .errors import InputError

        raise InputError(f"{path} already exists; choose another name or pass --overwrite.")
    figure = render_overlay(
        image,
        mask,
        spacing=spacing,
        slice_axis=slice_axis,
        title=title,
        count=count,
        axcodes=axcodes,
        affine=affine,
    )
    save = partial(figure.savefig, format="png", dpi=dpi)
    atomic_write(path, save, overwrite=overwrite, group=group)
    return path
