"""npe2 writer: a Labels layer to NIfTI/NRRD on its source image's grid (same affine, header).

A layer shown through ``display.to_display`` (the reader's layers and every mask the widgets
add) carries its file's VolumeMeta and DisplayGeometry: its data goes back to the file's own
voxel order with ``from_display`` and is written with the image's exact qform/sform. A Labels
layer without them is written in its own order, with the affine rebuilt from its scale,
translate and affine (turned back to RAS when it names the plugin's anatomical display axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .volume_files import MASK_SUFFIXES, write_labels


def write_labels_layer(path: str, data, attributes: dict) -> list[str]:
    """Write one Labels layer; napari's save dialog has already asked about overwriting."""
    from ._layer_geometry import GEOMETRY_KEY, META_KEY, meta_from_state
    from .display import DisplayGeometry, from_display

    labels = np.asarray(data)
    target = str(path)
    if not target.lower().endswith(MASK_SUFFIXES[:-1]):  # a .dcm SEG needs a DICOM source
        target += ".nii.gz"
    metadata = attributes.get("metadata") or {}
    geometry = metadata.get(GEOMETRY_KEY)
    if isinstance(geometry, DisplayGeometry) and geometry.display_shape == labels.shape:
        # Shown in the acquisition plane: back to the file's voxel order, bit for bit.
        labels, meta = from_display(labels, geometry), metadata[META_KEY]
    else:
        meta = meta_from_state(
            labels.shape,
            attributes.get("scale", (1.0,) * labels.ndim),
            attributes.get("translate", (0.0,) * labels.ndim),
            attributes.get("affine"),
            metadata,
            attributes.get("axis_labels"),
        )
    return [str(write_labels(Path(target), labels, meta, overwrite=True))]
