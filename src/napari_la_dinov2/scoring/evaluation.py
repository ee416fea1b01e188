"""Evaluate predicted masks against references: files, folders, or masks held in memory.

Files are read with :func:`~napari_la_dinov2.volume_files.read_labels_with_meta`; a prediction must lie
on its reference's grid (same shape and affine) or it is refused with an InputError naming the
file, because a metric between misaligned masks is meaningless. Distances use the reference's
voxel spacing. A mask with one non-zero value is binary: that value is the left atrium. A mask
with several non-zero values (e.g. 1 and 2) is refused unless ``label`` says which one is the
atrium (this tool evaluates one structure); a binary mask is taken as is whatever ``label`` is.

Rows are plain dicts (``case`` plus :data:`~napari_la_dinov2.scoring.metrics.METRIC_KEYS`) so the command
line, the napari widgets and the training engine can tabulate them with
:mod:`napari_la_dinov2.scoring.metrics`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume_files import VolumeMeta, case_name, is_supported_path, read_labels_with_meta
from .metrics import evaluate_case


def select_label(labels: np.ndarray, path: str | os.PathLike, label: int | None = None):
    """The left-atrium mask of a label file: its non-zero voxels when it holds one non-zero
    value (or none); with several, those equal to ``label``, refused without one. The one
    reading of ``--label`` (``evaluate`` and ``mesh``): a binary mask is the atrium whatever
    ``label`` says, so one ``--label`` serves a multi-label reference and binary predictions."""
    values = np.unique(labels)
    if not np.all(np.isfinite(values)):  # checked first: np.mod would warn on stderr
        raise InputError(f"{path} holds NaN or infinite values; give a label mask.")
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError(f"{path} holds non-integer values; give a label mask.")
    present = [int(v) for v in values if v != 0]
    if len(present) <= 1:
        return labels != 0
    listing = ", ".join(map(str, present[:8])) + (", ..." if len(present) > 8 else "")
    if label is None:
        raise InputError(
            f"{path} holds several labels ({listing}); pass --label N to say which one is the "
            "left atrium, or give a binary left-atrium mask."
        )
    if label not in present:
        raise InputError(f"{path} has no label {label} (it holds {listing}).")
    return labels == label


def read_mask(
    path: str | os.PathLike, like: VolumeMeta | None = None, label: int | None = None
) -> tuple[np.ndarray, VolumeMeta]:
    """A binary mask and its geometry; with ``like``, the mask must lie on that grid;
    ``label``: the atrium's value in a multi-label file (:func:`select_label`)."""
    path = Path(path).expanduser()
    labels, own_meta = read_labels_with_meta(path, image_meta=like)
    return select_label(labels, path, label), like if like is not None else own_meta


def evaluate_files(
    pred_paths: Sequence[str | os.PathLike],
    truth_paths: Sequence[str | os.PathLike],
    progress: Callable[[int, int], None] | None = None,
    label: int | None = None,
) -> list[dict]:
    """One row per (prediction, reference) pair, in order: ``case`` (the prediction's name)
    and the metrics of :func:`~napari_la_dinov2.scoring.metrics.evaluate_case`."""
    if len(pred_paths) != len(truth_paths):
        raise InputError(
            f"{len(pred_paths)} predictions but {len(truth_paths)} references; give one "
            "reference per prediction."
        )
    if not pred_paths:
        raise InputError("no masks to evaluate; give at least one prediction and reference.")
    rows = []
    for done, (pred_path, truth_path) in enumerate(zip(pred_paths, truth_paths)):
        truth, meta = read_mask(truth_path, label=label)
        pred, _ = read_mask(pred_path, like=meta, label=label)
        rows.append({"case": case_name(pred_path), **evaluate_case(pred, truth, meta.spacing)})
        if progress:
            progress(done + 1, len(pred_paths))
    return rows


def _masks_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a folder of .nii.gz/.nii/.nrrd masks.")
    return {
        case_name(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and is_supported_path(p)
    }


def match_folders(
    pred_dir: str | os.PathLike, truth_dir: str | os.PathLike
) -> list[tuple[str, Path, Path]]:
    """``(case, prediction, reference)`` matched by file name without suffix.

    Every prediction needs a reference; references without a prediction are left out (a
    folder of references usually holds more cases than one test split).
    """
    pred_dir, truth_dir = Path(pred_dir).expanduser(), Path(truth_dir).expanduser()
    preds, truths = _masks_in(pred_dir), _masks_in(truth_dir)
    if not preds:
        raise InputError(f"{pred_dir} holds no .nii.gz, .nii or .nrrd masks.")
    orphans = sorted(set(preds) - set(truths))
    if orphans:
        raise InputError(
            f"{len(orphans)} predictions in {pred_dir} have no reference of the same name in "
            f"{truth_dir} (first: {preds[orphans[0]].name}); name each mask like its reference."
        )
    return [(case, preds[case], truths[case]) for case in sorted(preds)]


def evaluate_folders(
    pred_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    label: int | None = None,
) -> list[dict]:
    """Evaluate every prediction in ``pred_dir`` against the same-named mask in ``truth_dir``."""
    pairs = match_folders(pred_dir, truth_dir)
    return evaluate_files([p for _, p, _ in pairs], [t for _, _, t in pairs], progress, label)


def evaluate_models(
    pred_dirs: Mapping[str, str | os.PathLike],
    truth_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    label: int | None = None,
) -> dict[str, list[dict]]:
    """``{model: folder of its predictions}`` against one folder of references: ``{model:
    rows}`` as :func:`evaluate_folders` gives them. Every folder is matched before any mask is
    read, so a naming mistake in the last folder is reported at once."""
    matched = {name: match_folders(folder, truth_dir) for name, folder in pred_dirs.items()}
    total = sum(len(pairs) for pairs in matched.values())
    results, done = {}, 0
    for name, pairs in matched.items():

        def step(count: int, _total: int, offset: int = done) -> None:
            if progress:
                progress(offset + count, total)

        results[name] = evaluate_files(
            [p for _, p, _ in pairs], [t for _, _, t in pairs], step, label
        )
        done += len(pairs)
    return results


def compare_masks(
    masks: Mapping[str, np.ndarray],
    reference: np.ndarray | None = None,
    spacing=(1.0, 1.0, 1.0),
    reference_name: str = "reference",
) -> list[dict]:
    """Compare masks held in memory (the napari Compare widget).

    With a ``reference``: one row per mask against it. Without: one row per unordered pair
    (Dice, IoU, HD95 and ASSD are symmetric; ``volume_ml_pred`` is the first mask's volume).
    Each row has ``name`` (the mask), ``reference`` (what it is compared with) and the metrics.
    """
    arrays = {str(name): np.asarray(mask) for name, mask in masks.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if reference is not None:
        reference = np.asarray(reference)
        expected = reference.shape
    else:
        if len(arrays) < 2:
            raise InputError("give at least two masks to compare, or a reference mask.")
        expected = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if shape != expected:
            raise InputError(
                f"the mask '{name}' has shape {shape} but the others have {expected}; masks "
                "must be on the same image grid to be compared."
            )
    if reference is not None:
        pairs = [(name, reference_name, arrays[name], reference) for name in arrays]
    else:
        pairs = [(a, b, arrays[a], arrays[b]) for a, b in itertools.combinations(list(arrays), 2)]
    return [
        {"name": a, "reference": b, **evaluate_case(pred, truth, spacing)}
        for a, b, pred, truth in pairs
    ]
