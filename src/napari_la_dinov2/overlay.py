"""A PNG overlay of an image and its left-atrium mask, for a quick look without a viewer.

A few slices along the slice axis where the mask is largest, plus one orthogonal cut through the
mask's centre, each with the mask's contour; pixels are drawn at their physical aspect (from
the voxel spacing), and the title gives the model and the LA volume. Matplotlib's Agg backend
through ``Figure`` directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_write
from .metrics import la_volume_ml

CONTOUR_COLOUR = "#ff3b30"
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


def _draw(ax, image2d, mask2d, aspect: float, window, xlabel: str, ylabel: str, title: str):
    """Draw ``image2d[h, v]`` with h horizontal and v vertical (origin at the bottom)."""
    ax.imshow(image2d.T, cmap="gray", origin="lower", aspect=aspect, vmin=window[0], vmax=window[1])
    if mask2d.any():
        fill = np.ma.masked_where(mask2d.T == 0, mask2d.T)
        ax.imshow(
            fill, cmap="autumn", origin="lower", aspect=aspect, alpha=FILL_ALPHA, vmin=0, vmax=1
        )
        ax.contour(mask2d.T.astype(np.float32), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    spacing=(1.0, 1.0, 1.0),
    slice_axis: int = 2,
    title: str = "",
    count: int = 3,
    axcodes: tuple[str, str, str] | None = None,
):
    """A matplotlib ``Figure``: ``count`` slices + one orthogonal view, contoured, titled."""
    from matplotlib.figure import Figure

    image, mask = np.asarray(image), np.asarray(mask) > 0
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be the same 3D shape")
    spacing = [float(s) for s in spacing]
    names = [f"axis {i}" + (f" ({axcodes[i]})" if axcodes else "") for i in range(3)]
    a, b = (axis for axis in range(3) if axis != slice_axis)
    window = _window(image)
    slices = choose_slices(mask, slice_axis, count)

    figure = Figure(figsize=(3.2 * (len(slices) + 1), 3.8), layout="constrained")
    axes = figure.subplots(1, len(slices) + 1, squeeze=False)[0]
    for ax, index in zip(axes, slices):
        plane = np.take(image, index, axis=slice_axis)
        plane_mask = np.take(mask, index, axis=slice_axis)
        area = plane_mask.sum() * spacing[a] * spacing[b] / 100.0  # mm^2 -> cm^2
        _draw(
            ax,
            plane,
            plane_mask,
            spacing[b] / spacing[a],
            window,
            names[a],
            names[b],
            f"slice {index} ({area:.1f} cm²)",
        )
    # Orthogonal cut through the mask's centre (the volume's centre for an empty mask), showing
    # the slice axis vertically so the through-plane coverage and its steps are visible.
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.asarray(mask.shape) / 2
    cut = int(centre[a])
    ortho = np.take(image, cut, axis=a)
    ortho_mask = np.take(mask, cut, axis=a)
    if b > slice_axis:  # np.take keeps the remaining axes in order: make it (b, slice_axis)
        ortho, ortho_mask = ortho.T, ortho_mask.T
    ax = axes[-1]
    _draw(
        ax,
        ortho,
        ortho_mask,
        spacing[slice_axis] / spacing[b],
        window,
        names[b],
        names[slice_axis],
        f"orthogonal, {names[a].split(' (')[0]} = {cut}",
    )
    for index in slices:
        ax.axhline(index, color="#30a0ff", linewidth=0.6, linestyle="--")
    volume_ml = la_volume_ml(mask, spacing)
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
    overwrite: bool = False,
    dpi: int = 110,
) -> Path:
    """Render the overlay and write it as a PNG atomically (never half a file)."""
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
    )
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
    return path
