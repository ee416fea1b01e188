"""Segmentation metrics: Dice, IoU and the LA volume in numpy, the 95% Hausdorff and average
surface distances from MONAI's functions (imported only when asked for), and the results table.

Masks are binary 3D arrays on the image grid (any non-zero voxel is foreground); distances are
in mm using the voxel spacing (mm per array axis, ``meta.spacing``).

Empty masks, defined once here so every report agrees:

- both masks empty: Dice = IoU = 1.0 and HD95 = ASSD = 0.0 mm (nothing to find, nothing found);
- exactly one mask empty: Dice = IoU = 0.0 and HD95 = ASSD = ``inf`` mm (there is no surface to
  measure a distance to, and the error is as large as it gets). ``inf`` rather than NaN so that a
  mean over cases shows the failure instead of silently skipping it; :func:`summarize` counts
  such cases in ``n_inf``.

HD95 is MONAI's symmetric 95th-percentile Hausdorff distance: the larger of the two directed
95th percentiles of surface-voxel distances (linear interpolation between ranks, like
``torch.quantile``). ASSD is MONAI's symmetric average surface distance: the mean over the
surface voxels of both masks of the distance to the other mask's surface.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

METRIC_KEYS = ("dice", "iou", "hd95_mm", "assd_mm", "volume_ml_pred", "volume_ml_truth")


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


def _pair(pred, truth, spacing) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {truth.shape}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (pred.ndim,)))
    if not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return pred, truth, spacing


def _surface_metric(pred, truth, spacing, compute) -> float:
    """Empty-mask convention of this module, else MONAI on ``1x1xXxYxZ`` tensors."""
    import torch

    pred, truth, spacing = _pair(pred, truth, spacing)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if has_pred != has_truth:
        return math.inf
    with warnings.catch_warnings():  # MONAI warns about empty classes (handled above) and
        warnings.simplefilter("ignore", UserWarning)  # about its own deprecated internals
        warnings.simplefilter("ignore", FutureWarning)
        value = compute(
            torch.from_numpy(pred[None, None]), torch.from_numpy(truth[None, None]), spacing
        )
    return float(value.reshape(-1)[0])


def hd95(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (0.0 both empty, inf one empty)."""
    from monai.metrics import compute_hausdorff_distance

    return _surface_metric(
        pred,
        truth,
        spacing,
        lambda p, t, s: compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=s
        ),
    )


def assd(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Average symmetric surface distance in mm (0.0 both empty, inf one empty)."""
    from monai.metrics import compute_average_surface_distance

    return _surface_metric(
        pred,
        truth,
        spacing,
        lambda p, t, s: compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=s
        ),
    )


def surface_dice(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0), tolerance_mm=1.0):
    """Normalised surface Dice (NSD) at ``tolerance_mm``: the share of both surfaces lying
    within the tolerance of the other (MONAI's ``compute_surface_dice``; 1.0 both empty, 0.0
    one empty), as the CVPR 2025 interactive challenge reports it."""
    from monai.metrics import compute_surface_dice

    pred_b, truth_b = np.asarray(pred) != 0, np.asarray(truth) != 0
    if not pred_b.any() or not truth_b.any():
        return float(pred_b.any() == truth_b.any())
    return _surface_metric(
        pred,
        truth,
        spacing,
        lambda p, t, s: compute_surface_dice(
            p, t, class_thresholds=[tolerance_mm], include_background=True, spacing=s
        ),
    )


def la_volume_ml(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Volume of the foreground in millilitres: voxel count x voxel volume (mm^3) / 1000."""
    mask = np.asarray(mask) != 0
    voxel_mm3 = float(np.prod(np.broadcast_to(np.asarray(spacing, float), (mask.ndim,))))
    return int(mask.sum()) * voxel_mm3 / 1000.0


def evaluate_case(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> dict:
    """All metrics of one prediction against its reference, keyed as in ``METRIC_KEYS``."""
    pred, truth, spacing = _pair(pred, truth, spacing)
    return dict(
        dice=dice(pred, truth),
        iou=iou(pred, truth),
        hd95_mm=hd95(pred, truth, spacing),
        assd_mm=assd(pred, truth, spacing),
        volume_ml_pred=la_volume_ml(pred, spacing),
        volume_ml_truth=la_volume_ml(truth, spacing),
    )


def summarize(rows: Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """Per metric: ``mean``, ``sd`` (sample SD, ddof=1; 0.0 for a single case), ``n`` and
    ``n_inf`` (cases with an infinite distance, i.e. one mask empty; they make the mean inf)."""
    if not rows:
        raise ValueError("no cases to summarize")
    summary = {}
    for key in METRIC_KEYS:
        values = np.asarray([float(row[key]) for row in rows if key in row], dtype=float)
        if values.size == 0:
            continue
        n_inf = int(np.isinf(values).sum())
        if n_inf:
            mean, sd = math.inf, math.nan
        else:
            mean = float(values.mean())
            sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        summary[key] = dict(mean=mean, sd=sd, n=int(values.size), n_inf=n_inf)
    return summary


# --- The paper's Table 1: one row per model, Dice % and IoU % as mean +- SD, plus distances ---

_TABLE_COLUMNS = (  # (metric key, header, scale, decimals)
    ("dice", "Dice (%)", 100.0, 1),
    ("iou", "IoU (%)", 100.0, 1),
    ("hd95_mm", "HD95 (mm)", 1.0, 2),
    ("assd_mm", "ASSD (mm)", 1.0, 2),
)


def table_rows(results: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """``{model name: per-case rows}`` -> one flat row per model (numbers, for CSV)."""
    table = []
    for model, rows in results.items():
        summary = summarize(rows)
        row = {"model": model, "n_cases": len(rows)}
        for key, _, scale, _ in _TABLE_COLUMNS:
            row[f"{key}_mean"] = summary[key]["mean"] * scale
            row[f"{key}_sd"] = summary[key]["sd"] * scale
        table.append(row)
    return table


def _mean_sd(mean: float, sd: float, decimals: int) -> str:
    if math.isinf(mean):
        return "inf"
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def markdown_table(results: Mapping[str, Sequence[Mapping]]) -> str:
    """Table 1 as markdown: ``| Model | n | Dice (%) | IoU (%) | HD95 (mm) | ASSD (mm) |``."""
    header = ["Model", "n", *(title for _, title, _, _ in _TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table_rows(results):
        cells = [row["model"], str(row["n_cases"])]
        cells += [
            _mean_sd(row[f"{key}_mean"], row[f"{key}_sd"], decimals)
            for key, _, _, decimals in _TABLE_COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table_markdown(path: str | os.PathLike, results: Mapping[str, Sequence[Mapping]]):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_table(results), encoding="utf-8")
    return path


def write_table_csv(path: str | os.PathLike, results: Mapping[str, Sequence[Mapping]]):
    """Table 1 as CSV: model, n_cases, then <metric>_mean and <metric>_sd (Dice/IoU in %)."""
    rows = table_rows(results)
    return write_csv(path, rows)


def write_cases_csv(path: str | os.PathLike, rows: Sequence[Mapping]):
    """Per-case rows (as from :func:`evaluate_case`, plus any name columns) as CSV."""
    return write_csv(path, rows)


def write_csv(path, rows: Sequence[Mapping], fields: Sequence[str] | None = None) -> Path:
    """Rows as CSV, written atomically (a reader never sees half a table). ``fields``: the
    columns (others are left out); default: every key, in order of appearance."""
    from ..volume_files import atomic_write

    path = Path(path)
    if fields is None:
        fields = list(dict.fromkeys(key for row in rows for key in row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
    return path
