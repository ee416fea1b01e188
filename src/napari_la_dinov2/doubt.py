"""Where the model doubts itself, so that correcting starts where it pays.

A model with several branches (the embedded default: one network per view) is unsure where
its members disagree: the doubt of a voxel is the standard deviation of the members'
foreground probabilities there. A single network has no second opinion, so its doubt is how
much its prediction changes when the scan is mirrored left-right (the standard deviation of
the plain and the mirrored probability).

:func:`rank_slices` orders the acquisition's slices by their doubt: the list a user works
down, most doubtful first.
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
            out.append(predictor.branch_logits(prepared, b, count=(done, total),
                                               progress=progress, cancel=cancel))  # fmt: skip
            done += view.shape[0]
        return out

    def mirrored(b, first, stop):
        net, batch = predictor.branches[b].net, predictor.inputs(prepared, b, first, stop)
        with torch.autocast(predictor.device.type, dtype=predictor.dtype,
                            enabled=predictor.dtype is not None):  # fmt: skip
            return net(batch.flip(-1)).flip(-1)

    total = 2 * prepared.total
    plain = predictor.branch_logits(prepared, 0, count=(0, total), progress=progress,
                                    cancel=cancel)  # fmt: skip
    flipped = predictor.branch_logits(prepared, 0, logits_of=mirrored, count=(total // 2, total),
                                      progress=progress, cancel=cancel)  # fmt: skip
    return [plain, flipped]


def rank_slices(doubt: np.ndarray, slice_axis: int, count: int | None = None) -> list[int]:
    """The slices along ``slice_axis`` in order of their total doubt, most doubtful first
    (slices with no doubt at all are left out); the first ``count`` of them when given."""
    per_slice = np.moveaxis(doubt, slice_axis, 0).reshape(doubt.shape[slice_axis], -1).sum(1)
    order = [int(i) for i in np.argsort(-per_slice, kind="stable") if per_slice[i] > 0]
    return order if count is None else order[:count]
