"""Evaluation of mask files and folders, and in-memory comparison for the napari widget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.scoring.evaluation import (
    case_name,
    compare_masks,
    evaluate_files,
    evaluate_folders,
    evaluate_models,
    match_folders,
)
from napari_la_dinov2.scoring.metrics import evaluate_case
from napari_la_dinov2.volume_files import VolumeMeta, read_labels, write_labels

SPACING = (0.625, 0.625, 1.25)


def _meta(shape=(12, 10, 8), spacing=SPACING):
    # A rotated, non-RAS grid: evaluation must use the spacing, not the axis directions.
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, -1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = (10.0, -20.0, 5.0)
    return VolumeMeta(affine=affine, shape=shape)


def _pair(shape=(12, 10, 8)):
    pred, truth = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    truth[3:9, 2:8, 2:6] = 1
    pred[4:10, 2:8, 2:6] = 1
    return pred, truth


def test_case_name():
    assert case_name("/a/b/case01.nii.gz") == "case01"
    assert case_name("x.nrrd") == "x"
    assert case_name("y.v2.nii") == "y.v2"


def test_evaluate_files_uses_the_files_spacing(tmp_path):
    pred, truth = _pair()
    meta = _meta()
    write_labels(tmp_path / "p" / "c1.nii.gz", pred, meta)
    write_labels(tmp_path / "t" / "c1.nrrd", truth, meta)  # NRRD (LPS) reference, same grid
    calls = []
    rows = evaluate_files(
        [tmp_path / "p" / "c1.nii.gz"],
        [tmp_path / "t" / "c1.nrrd"],
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 1)]
    (row,) = rows
    assert row["case"] == "c1"
    expected = evaluate_case(pred, truth, SPACING)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-5), key
    # one-slice shift along axis 0 (0.625 mm): HD95 = 0.625 mm
    assert row["hd95_mm"] == pytest.approx(0.625, rel=1e-5)
    assert row["dice"] == pytest.approx(5 / 6)


def test_grid_mismatch_is_refused_naming_the_file(tmp_path):
    pred, truth = _pair()
    write_labels(tmp_path / "truth.nii.gz", truth, _meta())
    write_labels(tmp_path / "small.nii.gz", pred[:-1], _meta(shape=(11, 10, 8)))
    with pytest.raises(InputError, match="small.nii.gz"):
        evaluate_files([tmp_path / "small.nii.gz"], [tmp_path / "truth.nii.gz"])
    moved = _meta()
    moved.affine[:3, 3] += 5.0
    write_labels(tmp_path / "moved.nii.gz", pred, moved)
    with pytest.raises(InputError, match="moved.nii.gz.*affine"):
        evaluate_files([tmp_path / "moved.nii.gz"], [tmp_path / "truth.nii.gz"])
    with pytest.raises(InputError, match="missing.nii.gz"):
        evaluate_files([tmp_path / "missing.nii.gz"], [tmp_path / "truth.nii.gz"])
    with pytest.raises(InputError, match="one reference per prediction"):
        evaluate_files([tmp_path / "truth.nii.gz"], [])


def test_non_binary_mask_is_refused(tmp_path):
    pred, truth = _pair()
    pred[0, 0, :3] = (2, 3, 4)
    write_labels(tmp_path / "truth.nii.gz", truth, _meta())
    write_labels(tmp_path / "multi.nii.gz", pred, _meta())
    with pytest.raises(InputError, match="multi.nii.gz.*binary"):
        evaluate_files([tmp_path / "multi.nii.gz"], [tmp_path / "truth.nii.gz"])


def test_nonzero_is_foreground(tmp_path):
    pred, truth = _pair()
    write_labels(tmp_path / "truth.nii.gz", truth * 255, _meta())
    write_labels(tmp_path / "pred.nii.gz", truth, _meta())
    (row,) = evaluate_files([tmp_path / "pred.nii.gz"], [tmp_path / "truth.nii.gz"])
    assert row["dice"] == 1.0 and row["hd95_mm"] == 0.0


def test_evaluate_folders_matches_by_name(tmp_path):
    pred, truth = _pair()
    meta = _meta()
    for case in ("b", "a"):
        write_labels(tmp_path / "pred" / f"{case}.nii.gz", pred, meta)
    for case in ("a", "b", "c"):  # the reference folder may hold more cases
        write_labels(tmp_path / "truth" / f"{case}.nii.gz", truth, meta)
    empty = np.zeros_like(truth)
    write_labels(tmp_path / "truth" / "b.nii.gz", empty, meta, overwrite=True)
    (tmp_path / "pred" / "notes.txt").write_text("not a mask")

    rows = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    assert [r["case"] for r in rows] == ["a", "b"]
    assert rows[0]["dice"] == pytest.approx(5 / 6)
    assert rows[1]["dice"] == 0.0 and math.isinf(rows[1]["hd95_mm"])  # reference empty

    write_labels(tmp_path / "pred" / "zz.nii.gz", pred, meta)
    with pytest.raises(InputError, match="zz.nii.gz"):
        match_folders(tmp_path / "pred", tmp_path / "truth")
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no .nii.gz"):
        evaluate_folders(tmp_path / "none", tmp_path / "truth")
    with pytest.raises(InputError, match="not a folder"):
        evaluate_folders(tmp_path / "pred" / "a.nii.gz", tmp_path / "truth")


def test_compare_masks_against_a_reference_and_pairwise():
    pred, truth = _pair()
    other = np.zeros_like(truth)
    other[3:9, 2:8, 2:5] = 1
    rows = compare_masks({"model": pred, "edited": other}, reference=truth, spacing=SPACING)
    assert [(r["name"], r["reference"]) for r in rows] == [
        ("model", "reference"),
        ("edited", "reference"),
    ]
    assert rows[0]["dice"] == pytest.approx(5 / 6)
    assert rows[1]["dice"] == pytest.approx(2 * 108 / (108 + 144))

    pairwise = compare_masks({"a": pred, "b": truth, "c": other}, spacing=SPACING)
    assert [(r["name"], r["reference"]) for r in pairwise] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairwise[0]["hd95_mm"] == pytest.approx(0.625, rel=1e-5)

    with pytest.raises(InputError, match="'b'"):
        compare_masks({"a": pred, "b": pred[:-1]})
    with pytest.raises(InputError, match="at least two"):
        compare_masks({"a": pred})


def test_real_label_against_itself_and_an_eroded_copy(real_data_dir, real_case_ids, tmp_path):
    case = real_case_ids[0]
    truth_path = real_data_dir / "labels" / f"{case}.nii.gz"
    truth = read_labels(truth_path)
    eroded = ndimage.binary_erosion(truth > 0, iterations=1).astype(np.uint8)
    import nibabel as nib

    meta = VolumeMeta(affine=nib.load(str(truth_path)).affine, shape=truth.shape)
    write_labels(tmp_path / f"{case}.nii.gz", eroded, meta)
    (same,) = evaluate_files([truth_path], [truth_path])
    (row,) = evaluate_files([tmp_path / f"{case}.nii.gz"], [truth_path])
    assert same["dice"] == 1.0 and same["hd95_mm"] == 0.0 and same["assd_mm"] == 0.0
    # A left atrium holds tens of millilitres of blood.
    assert 10.0 < same["volume_ml_truth"] < 300.0
    # One voxel of erosion: the surface moves by one in-plane step (0.625 mm) or one slice
    # (1.25 mm), so the distances lie in that range and Dice stays high but below 1.
    assert 0.625 <= row["hd95_mm"] <= 1.25 + 1e-6
    assert 0.3 < row["assd_mm"] < 1.25
    assert 0.8 < row["dice"] < 1.0
    assert row["volume_ml_pred"] < row["volume_ml_truth"]


def test_multi_label_mask_without_background_is_refused_unless_label_given(tmp_path):
    # Values {1, 2} and no 0: two distinct values, which were once taken as all foreground
    # (the whole volume). Now the labels are named and --label picks the atrium.
    pred, truth = _pair()
    labelled = truth + 1  # 1 = background structure, 2 = atrium
    write_labels(tmp_path / "truth.nii.gz", labelled, _meta())
    write_labels(tmp_path / "pred.nii.gz", pred, _meta())
    with pytest.raises(InputError, match=r"truth.nii.gz holds several labels \(1, 2\).*--label"):
        evaluate_files([tmp_path / "pred.nii.gz"], [tmp_path / "truth.nii.gz"])
    (row,) = evaluate_files([tmp_path / "pred.nii.gz"], [tmp_path / "truth.nii.gz"], label=2)
    assert row["dice"] == pytest.approx(5 / 6)  # label 2 is exactly the binary truth
    assert row["volume_ml_truth"] == pytest.approx(144 * 0.625 * 0.625 * 1.25 / 1000)


def test_evaluate_models_counts_progress_over_all_models(tmp_path):
    pred, truth = _pair()
    meta = _meta()
    for case in ("a", "b"):
        write_labels(tmp_path / "truth" / f"{case}.nii.gz", truth, meta)
        write_labels(tmp_path / "m1" / f"{case}.nii.gz", pred, meta)
    write_labels(tmp_path / "m2" / "a.nii.gz", truth, meta)
    calls = []
    results = evaluate_models(
        {"one": tmp_path / "m1", "two": tmp_path / "m2"},
        tmp_path / "truth",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert [r["case"] for r in results["one"]] == ["a", "b"]
    assert [r["dice"] for r in results["two"]] == [1.0]
    write_labels(tmp_path / "m2" / "zz.nii.gz", truth, meta)
    with pytest.raises(InputError, match="zz.nii.gz"):  # matched before any mask is read
        evaluate_models({"one": tmp_path / "m1", "two": tmp_path / "m2"}, tmp_path / "truth")
