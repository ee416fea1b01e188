"""Segmentation metrics: a thin layer over MONAI, plus left-atrium volume.

Masks are binary 3D arrays on the image grid; distances are in mm using the voxel spacing.
"""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap; 1.0 when both masks are empty (nothing to find, nothing found)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard); 1.0 when both masks are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int(np.logical_or(pred, truth).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, truth).sum()) / union
