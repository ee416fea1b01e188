"""Metrics against values worked out by hand on small masks (see the comment of each case)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_la_dinov2.scoring.metrics import (
    assd,
    dice,
    evaluate_case,
    hd95,
    iou,
    la_volume_ml,
    markdown_table,
    summarize,
    table_rows,
    write_cases_csv,
    write_table_csv,
    write_table_markdown,
)


def test_dice_and_iou_by_hand():
    pred = np.zeros((4, 4, 4), np.uint8)
    truth = np.zeros_like(pred)
    pred[0, 0, :4] = 1  # 4 voxels
    truth[0, 0, 1:4] = 1  # 3 of them shared ...
    truth[0, 1, 0:3] = 1  # ... plus 3 more: 6 voxels
    # Dice = 2*3 / (4+6) = 0.6; IoU = 3 / 7
    assert dice(pred, truth) == pytest.approx(0.6)
    assert iou(pred, truth) == pytest.approx(3 / 7)


def test_thin_plates_distance_is_the_gap_times_the_spacing():
    # Two one-voxel plates three voxels apart along axis 0: every surface voxel is 3 voxels
    # from the other plate, so HD95 = ASSD = 3 x spacing[0] (6 mm at 2 mm), whatever the other
    # spacings are.
    pred = np.zeros((6, 5, 5), bool)
    truth = np.zeros_like(pred)
    pred[0], truth[3] = True, True
    for spacing, expected in [((2.0, 1.0, 1.0), 6.0), ((0.5, 3.0, 7.0), 1.5)]:
        assert hd95(pred, truth, spacing) == pytest.approx(expected)
        assert assd(pred, truth, spacing) == pytest.approx(expected)


def test_shifted_cube_anisotropic_by_hand():
    # 3x3x3 cubes shifted by one voxel along axis 0; spacing (2, 1, 1) mm. Each cube has 26
    # surface voxels (all but its centre). Pred -> truth: the 9 voxels of pred's back face are
    # 2 mm (one step along axis 0) from truth; pred's voxel that sits on truth's centre is 1 mm
    # from truth's surface (one step along axis 1); the other 16 are on it (0). Truth -> pred
    # is the mirror image. HD95: 95th percentile of [0]*16 + [1] + [2]*9 -> 2 mm (both ways).
    # ASSD: (9*2 + 1) * 2 / 52 = 38/52 mm.
    pred = np.zeros((6, 5, 5), bool)
    truth = np.zeros_like(pred)
    pred[1:4, 1:4, 1:4] = True
    truth[2:5, 1:4, 1:4] = True
    assert hd95(pred, truth, (2.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert assd(pred, truth, (2.0, 1.0, 1.0)) == pytest.approx(38 / 52, rel=1e-6)
    # Isotropic 1 mm: (9*1 + 1) * 2 / 52.
    assert assd(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(20 / 52, rel=1e-6)
    # The same cubes touching the array border give the same answer (no edge artefact).
    pred, truth = np.zeros((4, 3, 3), bool), np.zeros((4, 3, 3), bool)
    pred[0:3], truth[1:4] = True, True
    assert assd(pred, truth, (2.0, 1.0, 1.0)) == pytest.approx(38 / 52, rel=1e-6)


def test_hd95_is_a_percentile_and_assd_a_mean_over_both_surfaces():
    # truth: one voxel; pred: the same voxel plus one 4 slices away at 2 mm slices (8 mm).
    # Directed pred->truth distances [0, 8]: 95th percentile (linear) = 0.95 * 8 = 7.6 mm.
    # ASSD: distances of all 3 surface voxels (0, 8 from pred; 0 from truth): 8/3 mm.
    truth = np.zeros((5, 5, 9), bool)
    pred = truth.copy()
    truth[2, 2, 2] = pred[2, 2, 2] = pred[2, 2, 6] = True
    assert hd95(pred, truth, (1.0, 1.0, 2.0)) == pytest.approx(7.6, rel=1e-6)
    assert assd(pred, truth, (1.0, 1.0, 2.0)) == pytest.approx(8 / 3, rel=1e-6)
    # symmetric: swapping the masks gives the same distances
    assert hd95(truth, pred, (1.0, 1.0, 2.0)) == pytest.approx(7.6, rel=1e-6)
    assert assd(truth, pred, (1.0, 1.0, 2.0)) == pytest.approx(8 / 3, rel=1e-6)


def test_identical_masks_have_zero_distance():
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[2:6, 1:7, 3:5] = 1
    assert hd95(mask, mask, (0.625, 0.625, 1.25)) == 0.0
    assert assd(mask, mask, (0.625, 0.625, 1.25)) == 0.0
    assert dice(mask, mask) == iou(mask, mask) == 1.0


def test_empty_masks_convention():
    empty = np.zeros((5, 5, 5), np.uint8)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = 1
    both = evaluate_case(empty, empty, (1.0, 1.0, 1.0))
    assert both == dict(
        dice=1.0, iou=1.0, hd95_mm=0.0, assd_mm=0.0, volume_ml_pred=0.0, volume_ml_truth=0.0
    )
    for pred, truth in [(empty, full), (full, empty)]:
        row = evaluate_case(pred, truth, (1.0, 1.0, 1.0))
        assert row["dice"] == 0.0 and row["iou"] == 0.0
        assert math.isinf(row["hd95_mm"]) and math.isinf(row["assd_mm"])


def test_volume_in_millilitres():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[:4, :5, :2] = 1  # 40 voxels of 0.625*0.625*1.25 mm^3 = 0.48828125 mm^3
    assert la_volume_ml(mask, (0.625, 0.625, 1.25)) == pytest.approx(40 * 0.48828125 / 1000)
    assert la_volume_ml(mask, (10.0, 10.0, 10.0)) == pytest.approx(40.0)  # 1 voxel = 1 mL


def test_evaluate_case_keys_and_values():
    pred = np.zeros((6, 5, 5), np.uint8)
    truth = np.zeros_like(pred)
    pred[1:4, 1:4, 1:4] = 1
    truth[2:5, 1:4, 1:4] = 1
    row = evaluate_case(pred, truth, (2.0, 1.0, 1.0))
    assert list(row) == ["dice", "iou", "hd95_mm", "assd_mm", "volume_ml_pred", "volume_ml_truth"]
    assert row["dice"] == pytest.approx(2 * 18 / 54)
    assert row["iou"] == pytest.approx(18 / 36)
    assert row["hd95_mm"] == pytest.approx(2.0)
    assert row["volume_ml_pred"] == row["volume_ml_truth"] == pytest.approx(27 * 2 / 1000)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1.0, 0.0, 1.0))


def _rows(dices, hd=(1.0, 2.0, 3.0)):
    return [
        dict(
            dice=d, iou=d - 0.1, hd95_mm=h, assd_mm=h / 2, volume_ml_pred=50.0, volume_ml_truth=52.0
        )
        for d, h in zip(dices, hd)
    ]


def test_summarize_mean_and_sample_sd():
    summary = summarize(_rows([0.8, 0.9, 1.0]))
    assert summary["dice"]["mean"] == pytest.approx(0.9)
    assert summary["dice"]["sd"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert summary["hd95_mm"]["mean"] == pytest.approx(2.0)
    assert summary["hd95_mm"]["sd"] == pytest.approx(1.0)
    assert summary["dice"]["n"] == 3 and summary["dice"]["n_inf"] == 0
    assert summarize(_rows([0.7]))["dice"] == dict(mean=0.7, sd=0.0, n=1, n_inf=0)
    with pytest.raises(ValueError):
        summarize([])


def test_summarize_counts_infinite_distances():
    summary = summarize(_rows([0.8, 0.0, 1.0], hd=(1.0, math.inf, 3.0)))
    assert math.isinf(summary["hd95_mm"]["mean"]) and summary["hd95_mm"]["n_inf"] == 1
    assert summary["dice"]["mean"] == pytest.approx(0.6)


def test_table_markdown_and_csv(tmp_path):
    results = {"UNet": _rows([0.8, 0.9, 1.0]), "DINOv2-S": _rows([0.9, 0.9, 0.9])}
    rows = table_rows(results)
    assert [r["model"] for r in rows] == ["UNet", "DINOv2-S"]
    assert rows[0]["dice_mean"] == pytest.approx(90.0) and rows[0]["dice_sd"] == pytest.approx(10)

    text = markdown_table(results)
    lines = text.strip().splitlines()
    assert lines[0] == "| Model | n | Dice (%) | IoU (%) | HD95 (mm) | ASSD (mm) |"
    assert lines[2] == "| UNet | 3 | 90.0 ± 10.0 | 80.0 ± 10.0 | 2.00 ± 1.00 | 1.00 ± 0.50 |"
    assert lines[3].startswith("| DINOv2-S | 3 | 90.0 ± 0.0 | 80.0 ± 0.0 |")

    md = write_table_markdown(tmp_path / "out" / "table1.md", results)
    assert md.read_text(encoding="utf-8") == text
    path = write_table_csv(tmp_path / "table1.csv", results)
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["model"] == "UNet"
    assert float(read[0]["dice_mean"]) == pytest.approx(90.0)
    assert float(read[1]["iou_sd"]) == pytest.approx(0.0, abs=1e-9)

    cases = write_cases_csv(tmp_path / "cases.csv", [{"case": "a", **_rows([0.5])[0]}])
    with cases.open() as handle:
        (only,) = list(csv.DictReader(handle))
    assert only["case"] == "a" and float(only["dice"]) == 0.5
