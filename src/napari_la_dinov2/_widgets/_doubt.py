"""Where to look first: the doubt map as an Image layer and a walk through the doubtful slices.

After a segmentation with "Show doubt", the Segment widget adds the model's doubt (``doubt.py``:
its members' disagreement) as an Image layer on exactly the mask's grid, and hands the slices
ranked by doubt (``doubt.rank_slices`` along the acquisition's through-plane axis) to a
:class:`DoubtNavigator`: "Next / Previous doubtful slice" (and Shift-N / Shift-B in the viewer)
move napari's slider there, and its line says where one is ("slice 46, 3 of 9 doubtful").

The doubt is highest on the mask's edge, which is the atrium's wall a reader must see: it is
drawn as a see-through yellow (no white, and far from Compare's magenta disagreement), and it
is marked stale as soon as the mask it was computed with is edited.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label, PushButton

from .._layer_geometry import labels_layer_kwargs, on_layer_grid, show_file_slice
from ..segmentation import DOUBTFUL_SLICES

DOUBT_KEY = "la_dinov2_doubt"  # in a doubt layer's metadata: True
STALE_SUFFIX = " (stale: mask edited)"
# Transparent where the members agree, at most 55% yellow where they disagree most: the wall
# under the doubt stays visible.
DOUBT_COLOURS = [[1.0, 0.88, 0.1, 0.0], [1.0, 0.88, 0.1, 0.55]]
DOUBT_SLICES = DOUBTFUL_SLICES  # the most doubtful slices the navigator walks through
NEXT_KEY, PREVIOUS_KEY = "Shift-N", "Shift-B"  # free in napari's own key map


def add_doubt_layer(viewer, image_layer, doubt: np.ndarray, name: str):
    """The file-order ``doubt`` as a see-through yellow Image layer over ``image_layer``."""
    from napari.utils.colormaps import Colormap

    shown = on_layer_grid(image_layer, doubt)
    kwargs = labels_layer_kwargs(image_layer, name)
    kwargs["metadata"][DOUBT_KEY] = True
    top = float(doubt.max()) if doubt.size else 0.0
    return viewer.add_image(
        shown,
        colormap=Colormap(DOUBT_COLOURS, name="la_doubt"),
        blending="translucent",
        contrast_limits=(0.0, top if top > 0 else 0.5),
        **kwargs,
    )


def is_doubt_layer(layer) -> bool:
    return bool((getattr(layer, "metadata", None) or {}).get(DOUBT_KEY))


def mark_stale_on_edit(mask_layer, doubt_layer) -> None:
    """Once the mask is painted, filled or replaced, its doubt no longer describes it: the doubt
    layer is renamed '... (stale: mask edited)' and dimmed (the slices to check stay listed)."""

    def edited(event=None):
        if doubt_layer.name.endswith(STALE_SUFFIX):
            return
        doubt_layer.name = doubt_layer.name + STALE_SUFFIX
        doubt_layer.opacity = 0.5 * doubt_layer.opacity

    mask_layer.events.paint.connect(edited)
    mask_layer.events.data.connect(edited)


class DoubtNavigator(Container):
    """Next / Previous doubtful slice, and where one is in the list."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.previous = PushButton(text="Previous doubtful slice", enabled=False)
        self.next = PushButton(text="Next doubtful slice", enabled=False)
        self.previous.tooltip = f"{PREVIOUS_KEY} in the viewer"
        self.next.tooltip = f"{NEXT_KEY} in the viewer"
        self.where = Label(value="")
        buttons = Container(widgets=[self.previous, self.next], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[buttons, self.where], labels=False)
        self.margins = (0, 0, 0, 0)
        self.layer = None
        self.slice_axis = 0
        self.slices: list[int] = []
        self.position = -1
        self.previous.changed.connect(self.go_previous)
        self.next.changed.connect(self.go_next)
        viewer.bind_key(NEXT_KEY, lambda _viewer: self.go_next(), overwrite=True)
        viewer.bind_key(PREVIOUS_KEY, lambda _viewer: self.go_previous(), overwrite=True)

    def set_slices(self, layer, slice_axis: int, slices: list[int]) -> None:
        """Walk ``slices`` (file indices along ``slice_axis``, most doubtful first) of the volume
        ``layer`` shows; starts before the first."""
        self.layer, self.slice_axis, self.slices = layer, slice_axis, list(slices)
        self.position = -1
        self.previous.enabled = self.next.enabled = bool(self.slices)
        self.where.value = (
            f"{len(self.slices)} doubtful slices: {NEXT_KEY} or 'Next' shows the first"
            if self.slices
            else "no doubtful slice"
        )

    def go_next(self, _=None) -> int | None:
        return self._go(self.position + 1)

    def go_previous(self, _=None) -> int | None:
        return self._go(self.position - 1)

    def _go(self, position: int) -> int | None:
        """Show the doubtful slice at ``position`` of the list (wrapping round); its slider
        position, or None when there is nothing to show."""
        if not self.slices or self.layer is None or self.layer not in self.viewer.layers:
            self.where.value = "no doubtful slices: segment with 'Show doubt' first"
            return None
        self.position = position % len(self.slices)
        index = self.slices[self.position]
        shown = show_file_slice(self.viewer, self.layer, self.slice_axis, index)
        self.where.value = f"slice {shown}, {self.position + 1} of {len(self.slices)} doubtful"
        return shown
