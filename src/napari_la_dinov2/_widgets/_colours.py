"""Colours of the masks a session shows: each mask layer its own, none like an overlay's.

napari draws label 1 of every Labels layer in the same brown, so two masks of one image (a
model's and the expert's, or two models') look alike. Each mask a widget adds takes the first
colour of MASK_COLOURS no mask in the viewer has yet. The palette has no red or brown (napari's
colours of label 1), no magenta (Compare's disagreement layer) and no yellow (the doubt).
"""

from __future__ import annotations

import numpy as np

MASK_COLOURS = ["#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#98df8a", "#7f7f7f"]
DISAGREE_COLOUR = "#ff00ff"
DISAGREE_COLOUR_NAME = "magenta"


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in np.asarray(rgba)[:3])


def label_one_colour(layer) -> str | None:
    """The colour (``#rrggbb``) label 1 of a Labels layer is drawn in."""
    try:
        return _hex(layer.colormap.map(np.array([1]))[0])
    except (AttributeError, ValueError, IndexError):
        return None


def next_mask_colour(viewer) -> str:
    """The first palette colour no Labels layer of ``viewer`` draws label 1 in (cycling on)."""
    from napari.layers import Labels

    masks = [layer for layer in viewer.layers if isinstance(layer, Labels)]
    used = {label_one_colour(layer) for layer in masks}
    for colour in MASK_COLOURS:
        if colour not in used:
            return colour
    return MASK_COLOURS[len(masks) % len(MASK_COLOURS)]


def colour_mask(layer, colour: str) -> None:
    """Draw every label of ``layer`` in ``colour`` (a binary mask: its one label)."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: colour})


def add_mask_layer(viewer, data, **kwargs):
    """``viewer.add_labels`` in a colour no other mask of the viewer has."""
    colour = next_mask_colour(viewer)
    layer = viewer.add_labels(data, **kwargs)
    colour_mask(layer, colour)
    return layer
