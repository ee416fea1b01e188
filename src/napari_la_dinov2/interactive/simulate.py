"""The simulated user: where the next click goes, as interactive-segmentation benchmarks put it.

The CVPR 2025 interactive protocol (after RITM): the next click lies at the point deepest inside
the largest connected error region (the Euclidean distance transform, in millimetres),
positive where the atrium was missed and negative where something else was taken. Training
plays the same protocol, so the model learns from the clicks it will be measured with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .clicks import Click

# 26-connectivity: an error region is one region if its voxels touch at all
_CONNECT = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class ErrorRegion:
    """One connected region of missed (``positive``) or wrongly taken voxels."""

    positive: bool
    size: int
    deepest: tuple[int, int, int]
    depth_mm: float
    box: tuple[slice, slice, slice]

    def click(self) -> Click:
        return Click(self.deepest, self.positive)


def error_regions(
    mask: np.ndarray, truth: np.ndarray, spacing: Sequence[float], *, min_size: int = 1
) -> list[ErrorRegion]:
    """The error regions of ``mask`` against ``truth``, largest first."""
    mask, truth = np.asarray(mask, bool), np.asarray(truth, bool)
    regions = []
    for positive, error in ((True, truth & ~mask), (False, mask & ~truth)):
        labelled, count = ndimage.label(error, structure=_CONNECT)
        if not count:
            continue
        sizes = np.bincount(labelled.ravel())[1:]
        boxes = ndimage.find_objects(labelled)
        for number in np.flatnonzero(sizes >= min_size):
            size = int(sizes[number])
            regions.append(_region(labelled, number + 1, boxes[number], positive, size, spacing))
    regions.sort(key=lambda r: (-r.size, -r.depth_mm))
    return regions


def _region(labelled, label, box, positive, size, spacing) -> ErrorRegion:
    # The distance transform of the region within its box, padded by one voxel so the box's
    # faces count as outside the region.
    inside = np.pad(labelled[box] == label, 1)
    depth = ndimage.distance_transform_edt(inside, sampling=spacing)
    flat = int(np.argmax(depth))
    local = np.unravel_index(flat, depth.shape)
    deepest = tuple(int(s.start + i - 1) for s, i in zip(box, local, strict=True))
    return ErrorRegion(
        positive=positive, size=size, deepest=deepest, depth_mm=float(depth.flat[flat]), box=box
    )


def next_click(mask: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> Click | None:
    """The protocol's next click, or None where the mask has no error left."""
    regions = error_regions(mask, truth, spacing)
    return regions[0].click() if regions else None
