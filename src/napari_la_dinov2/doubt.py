"""Where the model doubts itself, so that correcting starts where it pays.

A model with several branches (the embedded default: one network per view) is unsure where
its members disagree: the doubt of a voxel is the standard deviation of the members'
foreground probabilities there. A single network has no second opinion, so its doubt is how
much its prediction changes when the scan is mirrored left-right (the standard deviation of
the plain and the mirrored probability).

:func:`rank_slices` orders the acquisition's slices by their doubt near the mask's surface: the
list a user works down, most doubtful first.
"""

from __future__ import annotations

import numpy as np
import torch

from .inference import Predictor, PreparedVolume, sigmoid_in_place


def doubt_map(predictor: Predictor, prepared: PreparedVolume, *, progress=None, cancel=None):
    """``(probability, doubt)``: float32 volumes of the volume's shape (0 outside the region).
    The probability is exactly ``predictor.probabilities(prepared)`` (with flip averaging off);
    the doubt is the opinions' standard deviation."""
    opinions = _opinion_logits(predictor, prepared, progress, cancel)
    members = [sigmoid_in_place(logits.copy()) for logits in opinions]
    mean = sum(members) / len(members)
    # Two passes (deviations from the mean): E[p^2] - E[p]^2 cancels badly where they agree.
    doubt = np.sqrt(sum((m - mean) ** 2 for m in members) / len(members))
    if len(predictor.branches) > 1:  # the Predictor's own combination: mean logits
        combined = opinions[0]
        for logits in opinions[1:]:
            combined += logits
        combined /= len(opinions)
    else:  # the plain prediction; the mirrored one only measures doubt
        combined = opinions[0]
    probability = np.zeros(prepared.shape, np.float32)
    probability[prepared.index] = sigmoid_in_place(combined)
    full_doubt = np.zeros(prepared.shape, np.float32)
    full_doubt[prepared.index] = doubt
    return probability, full_doubt


def _opinion_logits(predictor, prepared, progress, cancel) -> list[np.ndarray]:
    """Region logits per opinion: each branch alone, or one network on the plain and on the
    mirrored slices."""
    if len(predictor.branches) > 1:
        total, done, out = prepared.total, 0, []
        for b, view in enumerate(prepared.slices):
            out.append(
                predictor.branch_logits(
                    prepared, b, count=(done, total), progress=progress, cancel=cancel
                )
            )
            done += view.shape[0]
        return out

    def mirrored(b, first, stop):
        net, batch = predictor.branches[b].net, predictor.inputs(prepared, b, first, stop)
        with torch.autocast(
            predictor.device.type, dtype=predictor.dtype, enabled=predictor.dtype is not None
        ):
            return net(batch.flip(-1)).flip(-1)

    total = 2 * prepared.total
    plain = predictor.branch_logits(prepared, 0, count=(0, total), progress=progress, cancel=cancel)
    flipped = predictor.branch_logits(
        prepared, 0, logits_of=mirrored, count=(total // 2, total), progress=progress, cancel=cancel
    )
    return [plain, flipped]


SURFACE_BAND = 3  # voxels on either side of the mask's surface where doubt counts for ranking


def rank_slices(
    doubt: np.ndarray, slice_axis: int, count: int | None = None, mask: np.ndarray | None = None
) -> list[int]:
    """The slices along ``slice_axis`` in order of their total doubt, most doubtful first
    (slices with no doubt at all are left out); the first ``count`` of them when given.

    With the model's ``mask``, only the doubt within ``SURFACE_BAND`` voxels of its surface
    counts. Members also disagree about structures the combined model rejects anyway (another
    chamber, the aorta): that doubt changes no mask voxel, yet spread over a whole slice it
    outweighs the atrium's edge. On the default model's 8 test patients the band raised the
    share of error voxels in the top 10% of slices from 18% to 20% (a perfect ranking: 23%;
    benchmarks/correction_loop.py). An empty mask ranks by all of the doubt."""
    if mask is not None and np.any(mask):
        doubt = np.where(surface_band(np.asarray(mask) > 0, SURFACE_BAND), doubt, 0)
    per_slice = np.moveaxis(doubt, slice_axis, 0).reshape(doubt.shape[slice_axis], -1).sum(1)
    order = [int(i) for i in np.argsort(-per_slice, kind="stable") if per_slice[i] > 0]
    return order if count is None else order[:count]


def surface_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The voxels within ``width`` voxels of the mask's surface, inside or outside (worked out
    in the mask's bounding box only: a whole acquisition is mostly far from the atrium)."""
    from scipy import ndimage

    box = tuple(
        slice(max(int(i.min()) - width - 1, 0), int(i.max()) + width + 2) for i in np.nonzero(mask)
    )
    part = mask[box]
    band = np.zeros(mask.shape, bool)
    grown = ndimage.binary_dilation(part, iterations=width)
    band[box] = grown & ~ndimage.binary_erosion(part, iterations=width, border_value=1)
    return band
