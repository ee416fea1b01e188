"""Annotated cases in: folders of image/label pairs or arrays held in memory, and the
patient-level split.

A case is one patient: an image volume, its binary left-atrium mask on the same grid, and the
image's meta. Everything the training engine reads comes through here, so bad pairs fail early
with the case named.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume_files import (
    SUPPORTED_SUFFIXES,
    VolumeMeta,
    atomic_write,
    case_name,
    read_labels,
    read_volume,
)

LABEL_FOLDER_NAMES = ("labels", "masks", "labelsTr", "label")
IMAGE_FOLDER_NAMES = ("images", "imagesTr", "image")
_LABEL_TAGS = ("_label", "_labels", "_mask", "_seg", "_gt")


@dataclass
class Case:
    """One patient: ``image`` float32 and ``labels`` uint8 0/1 on the same grid, and its meta.

    ``prediction``: the model's own mask before the user corrected it (the slices where
    ``labels`` differ from it are the corrections, weighted in training); ``replay``: an earlier
    case mixed into a correction round so that the model does not forget it."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    meta: VolumeMeta
    prediction: np.ndarray | None = None
    replay: bool = False

    def __post_init__(self):
        self.image = np.asarray(self.image, dtype=np.float32)
        labels = np.asarray(self.labels)
        if self.image.ndim != 3:
            raise InputError(f"case {self.name}: the image must be 3D, not {self.image.shape}.")
        if labels.shape != self.image.shape:
            raise InputError(
                f"case {self.name}: the mask has shape {labels.shape} but the image has "
                f"{self.image.shape}; they must be on the same grid."
            )
        values = np.unique(labels)
        if not set(values.tolist()) <= {0, 1}:
            raise InputError(
                f"case {self.name}: the mask is not binary (values {values[:6].tolist()}); "
                "use 1 for the left atrium and 0 elsewhere."
            )
        if not values.size or values.max() == 0:
            raise InputError(f"case {self.name}: the mask has no labelled voxel; annotate it.")
        self.labels = labels.astype(np.uint8)
        if self.prediction is not None and np.shape(self.prediction) != self.image.shape:
            raise InputError(
                f"case {self.name}: the model's mask has shape {np.shape(self.prediction)}, "
                f"not the image's {self.image.shape}."
            )


def cases_from_arrays(items) -> list[Case]:
    """``[(name, image, labels, meta | None), ...]`` held in memory (e.g. napari layers)."""
    cases = []
    for name, image, labels, meta in items:
        meta = meta if meta is not None else VolumeMeta.from_spacing(np.shape(image))
        cases.append(Case(name=str(name), image=image, labels=labels, meta=meta))
    return cases


def _volumes_in(folder: Path) -> dict[str, Path]:
    """Volumes of ``folder`` by case name; two files of one name (a.nii and a.nii.gz) are
    refused, since which one is the case is the user's call."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and any(path.name.lower().endswith(s) for s in SUPPORTED_SUFFIXES):
            if case_name(path) in found:
                raise InputError(
                    f"{folder} holds two files for case {case_name(path)!r} "
                    f"({found[case_name(path)].name} and {path.name}); keep one."
                )
            found[case_name(path)] = path
    return found


def find_case_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """Pairs of (name, image, label) in ``folder``: either ``images/`` + ``labels/`` subfolders
    with the same file names, or files side by side named ``<id>`` and ``<id>_label`` (also
    ``_mask``, ``_seg``, ``_gt``)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of cases.")
    image_dir = next((folder / n for n in IMAGE_FOLDER_NAMES if (folder / n).is_dir()), None)
    label_dir = next((folder / n for n in LABEL_FOLDER_NAMES if (folder / n).is_dir()), None)
    pairs = []
    if image_dir and label_dir:
        images, labels = _volumes_in(image_dir), _volumes_in(label_dir)
        pairs = [(k, images[k], labels[k]) for k in images if k in labels]
        unmatched = sorted(set(images) ^ set(labels))
    else:
        files = _volumes_in(folder)
        for stem, path in files.items():
            for tag in _LABEL_TAGS:
                if stem.endswith(tag) and stem[: -len(tag)] in files:
                    pairs.append((stem[: -len(tag)], files[stem[: -len(tag)]], path))
        matched = {p[0] for p in pairs} | {p[2].name for p in pairs}
        unmatched = [s for s, p in files.items() if s not in matched and p.name not in matched]
    if not pairs:
        raise InputError(
            f"{folder} holds no image/label pairs; use images/ and labels/ subfolders with the "
            "same file names, or <id>.nii.gz beside <id>_label.nii.gz."
        )
    if unmatched:
        import warnings

        warnings.warn(
            f"{folder}: {len(unmatched)} files without a partner were skipped "
            f"(e.g. {unmatched[0]})",
            stacklevel=2,
        )
    return pairs


def load_case_folder(folder: str | Path, names: list[str] | None = None) -> list[Case]:
    """Read every pair of ``folder`` (or only ``names``), checking each mask against its image."""
    cases = []
    for name, image_path, label_path in find_case_pairs(folder):
        if names is not None and name not in names:
            continue
        image, meta = read_volume(image_path)
        try:
            labels = read_labels(label_path, meta)
        except InputError as error:
            raise InputError(f"case {name}: {error}") from error
        cases.append(Case(name=name, image=image, labels=labels, meta=meta))
    if names is not None:
        missing = sorted(set(names) - {c.name for c in cases})
        if missing:
            raise InputError(f"{folder}: cases not found: {', '.join(missing[:5])}.")
    return cases


def split_cases(names: list[str], fractions=(0.7, 0.1, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Seeded split by patient into train/val/test. Each part that has a non-zero fraction gets
    at least one case when there are enough cases; train always gets at least one."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise InputError(f"split fractions must be three non-negative numbers, not {fractions}.")
    if not names:
        raise InputError("no cases to split.")
    total = sum(fractions)
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = int(round(n * fractions[1] / total))
    n_test = int(round(n * fractions[2] / total))
    if fractions[1] > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if fractions[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    n_train = max(1, n - n_val - n_test)
    n_val = min(n_val, n - n_train)
    n_test = n - n_train - n_val
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val : n_train + n_val + n_test],
    }


def write_split(split: dict[str, list[str]], path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(split, indent=2) + "\n"))
