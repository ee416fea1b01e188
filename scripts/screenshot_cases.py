"""The cases the screenshot scripts show: real LA 2018 cases the model never saw (else synthetic
phantoms), and a folder of short cases for the few-shot screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def la2018() -> Path | None:
    for candidate in (os.environ.get("LA2018_DIR"), REPO.parent / "shared" / "data" / "la2018"):
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


def unseen_first(case_ids: list[str], model_source: str | None) -> list[str]:
    """The cases ``model_source`` was neither trained nor validated on first (its provenance
    lists them), so the screenshots show it on data it has not seen."""
    if model_source is None:
        return case_ids
    from napari_la_dinov2.models import load_model

    unseen = load_model(model_source).unseen(case_ids)
    return unseen + [case_id for case_id in case_ids if case_id not in unseen]


def load_cases(count: int, model_source: str | None = None):
    """(name, image, labels, meta) of real cases, else phantoms with different seeds."""
    from napari_la_dinov2 import read_labels, read_volume
    from napari_la_dinov2._sample_data import make_sample

    root = la2018()
    if root is None:
        return [(f"phantom{i}", *make_sample(seed=i)) for i in range(count)]
    cases = []
    case_ids = unseen_first((root / "cases.txt").read_text().split(), model_source)
    for case_id in case_ids[:count]:
        image, meta = read_volume(root / "images" / f"{case_id}.nii.gz")
        labels = read_labels(root / "labels" / f"{case_id}.nii.gz", meta).astype(np.uint8)
        cases.append((case_id, image, labels, meta))
    return cases


def fewshot_cases_folder(cases, folder: Path) -> Path:
    """The cases written to a folder, each cut to the 24 slices around its atrium's centre (to
    keep the runs short on a CPU)."""
    from napari_la_dinov2 import VolumeMeta, write_labels

    for name, image_data, labels, meta in cases:
        z0 = max(0, int(np.argmax(labels.sum(axis=(0, 1)))) - 12)
        shift = np.eye(4)
        shift[2, 3] = z0
        crop = VolumeMeta(meta.affine @ shift, (*labels.shape[:2], 24), meta.source)
        part = (slice(None), slice(None), slice(z0, z0 + 24))
        write_labels(folder / "images" / f"{name}.nii.gz", image_data[part].astype(np.uint8), crop)
        write_labels(folder / "labels" / f"{name}.nii.gz", labels[part], crop)
    return folder
