"""npe2 writer: a Labels layer to NIfTI on its source image's grid (same affine, same header).

Segment copies the image layer's metadata (its VolumeMeta) into the Labels layer, so the mask is
written with the image's exact qform/sform; a Labels layer drawn by hand without it is written
with the affine rebuilt from its own scale, translate and affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import write_labels


def write_labels_layer(path: str, data, attributes: dict) -> list[str]:
    """Write one Labels layer; napari's save dialog has already asked about overwriting."""
    from ._widgets._layers import meta_from_state

    labels = np.asarray(data)
    target = str(path)
    if not target.lower().endswith((".nii", ".nii.gz", ".nrrd")):
        target += ".nii.gz"
    meta = meta_from_state(
        labels.shape,
        attributes.get("scale", (1.0,) * labels.ndim),
        attributes.get("translate", (0.0,) * labels.ndim),
        attributes.get("affine"),
        attributes.get("metadata"),
    )
    return [str(write_labels(Path(target), labels, meta, overwrite=True))]
