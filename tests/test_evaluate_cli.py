"""`la-dinov2 evaluate` with several models: the statistics of a constructed case with a known
answer end to end, the cost columns, and the refusals (existing outputs, multi-label masks)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_la_dinov2.cli import main
from napari_la_dinov2.models import build_model, save_checkpoint
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm^3 voxels


def _save(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), str(path))


def _mask(voxels: int, value: int = 1) -> np.ndarray:
    mask = np.zeros((100, 4, 2), np.uint8)
    mask.reshape(-1)[:voxels] = value
    return mask


@pytest.fixture
def folders(tmp_path) -> Path:
    """10 references of 90 voxels; model A finds 90 - i of them in case i, model B 60 (Dice
    0.8) in every case but c09, which B has no prediction for."""
    for i in range(10):
        _save(tmp_path / "gt" / f"c{i:02d}.nii.gz", _mask(90))
        _save(tmp_path / "a" / f"c{i:02d}.nii.gz", _mask(90 - i))
        if i < 9:
            _save(tmp_path / "b" / f"c{i:02d}.nii.gz", _mask(60))
    _save(tmp_path / "gt" / "extra.nii.gz", _mask(90))  # a reference no model predicted
    return tmp_path


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_models_known_answer(folders, capsys):
    outs = {name: folders / f"out_{name}" for name in ("cases.csv", "summary.csv", "pairs.csv")}
    argv = [
        "evaluate",
        "--ref",
        folders / "gt",
        "--pred",
        f"A={folders / 'a'}",
        "--pred",
        f"B={folders / 'b'}",
        "--csv",
        outs["cases.csv"],
        "--summary-csv",
        outs["summary.csv"],
        "--pairs-csv",
        outs["pairs.csv"],
        "--markdown",
        folders / "report.md",
        "--resamples",
        2000,
    ]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "9 common to all models; 1 dropped: c09 (no result from B)" in out
    pairs = {row["metric"]: row for row in _rows(outs["pairs.csv"])}
    dice = pairs["dice"]
    assert (dice["model_a"], dice["model_b"], dice["n"], dice["n_nonzero"]) == ("A", "B", "9", "9")
    assert float(dice["p_value"]) == 2 / 2**9 == float(dice["p_floor"])  # every A - B > 0
    assert float(pairs["volume_error_ml"]["mean_diff"]) > 0  # A misses fewer voxels
    summary = {row["model"]: row for row in _rows(outs["summary.csv"])}
    assert summary["B"]["n_cases"] == "9"
    assert float(summary["B"]["dice_mean"]) == pytest.approx(80.0)
    assert float(summary["B"]["volume_error_ml_mean"]) == pytest.approx(-30 * 2 / 1000)
    assert float(summary["B"]["abs_volume_error_ml_mean"]) == pytest.approx(0.06)
    a = summary["A"]
    assert float(a["dice_ci_low"]) < float(a["dice_mean"]) < float(a["dice_ci_high"])
    assert a["n_resamples"] == "2000" and a["seed"] == "0" and a["parameters"] == ""
    cases = _rows(outs["cases.csv"])
    assert len(cases) == 18 and {r["model"] for r in cases} == {"A", "B"}
    report = (folders / "report.md").read_text(encoding="utf-8")
    assert "| B | 9 | 80.0 ± 0.0 [80.0, 80.0] |" in report
    assert "| A | B | 9 | 0.00391 (0.00391) |" in report


def test_model_cost_measured_and_from_a_timing_file(folders, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_case((40, 36, 6))[0], AFFINE), str(image))
    (folders / "b" / "timing.csv").write_text("case,seconds\nc00,2.0\nc01,4.0\nzz,100\n")
    base = [
        "evaluate",
        "--ref",
        folders / "gt",
        "--pred",
        f"A={folders / 'a'}",
        "--pred",
        f"B={folders / 'b'}",
        "--model",
        f"A={checkpoint}",
        "--resamples",
        500,
    ]
    code, out, err = _run([*base, "--summary-csv", tmp_path / "s.csv"], capsys)
    assert code == 0, err
    summary = {row["model"]: row for row in _rows(tmp_path / "s.csv")}
    parameters = sum(p.numel() for p in model.parameters())
    assert int(summary["A"]["parameters"]) == parameters
    assert float(summary["A"]["gflops_per_slice"]) > 0
    assert summary["A"]["seconds_per_volume"] == ""  # neither measured nor in a timing file
    assert float(summary["B"]["seconds_per_volume"]) == 3.0  # mean over c00, c01
    assert summary["B"]["timing"] == "timing.csv (2 cases)" and summary["B"]["parameters"] == ""
    assert "### Cost" in out

    code, out, err = _run(
        [*base, "--time-image", image, "--device", "cpu", "--summary-csv", tmp_path / "t.csv"],
        capsys,
    )
    assert code == 0, err
    measured = _rows(tmp_path / "t.csv")[0]
    assert float(measured["seconds_per_volume"]) > 0
    assert measured["timing"] == "measured: image.nii.gz on cpu"


def test_two_positional_form_is_one_model(folders, capsys):
    code, out, err = _run(["evaluate", folders / "a", folders / "gt", "--name", "mine"], capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith("case\tdice")
    assert "| mine | 10 |" in out and "Paired tests" not in out


@pytest.mark.parametrize("option", ["--csv", "--summary-csv", "--pairs-csv", "--markdown"])
def test_existing_output_refused_before_any_work(folders, capsys, option):
    existing = folders / ("old.md" if option == "--markdown" else "old.csv")
    existing.write_text("keep me")
    fresh = folders / "fresh.csv"
    argv = ["evaluate", "--ref", folders / "gt", "--pred", f"A={folders / 'a'}", option, existing]
    if option != "--csv":
        argv += ["--csv", fresh]
    code, out, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "already exists" in err and "--overwrite" in err and out == ""
    assert (
        existing.read_text(encoding="utf-8") == "keep me" and not fresh.exists()
    )  # nothing written at all
    code, _, err = _run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert existing.read_text(encoding="utf-8") != "keep me"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--csv", "x.txt"], "must end in .csv"),
        (["--csv", "same.csv", "--summary-csv", "same.csv"], "same file"),
        (["--model", "C=default"], "no --pred of that name"),
        (["--model", "A=unet_typo"], "neither a model name"),
        (["--time-image", "image.nii.gz"], "--model"),
        (["--pred", "A=elsewhere"], "given twice"),
        (["--resamples", "10"], "must be from 100 to 100000"),
    ],
)
def test_bad_options_exit_2_with_one_line(folders, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(folders)
    argv = ["evaluate", "--ref", folders / "gt", "--pred", f"A={folders / 'a'}", *extra]
    code, out, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    code, _, err = _run(
        ["evaluate", folders / "a", folders / "gt", "--ref", folders / "gt"], capsys
    )
    assert code == 2 and "not both forms" in err


def test_multi_label_masks_need_a_label(tmp_path, capsys):
    truth = _mask(90)
    truth.reshape(-1)[90:150] = 2  # another structure labelled 2
    _save(tmp_path / "gt" / "c.nii.gz", truth)
    _save(tmp_path / "pred" / "c.nii.gz", _mask(90))
    argv = ["evaluate", tmp_path / "pred", tmp_path / "gt", "--csv", tmp_path / "m.csv"]
    code, out, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "c.nii.gz holds several labels (1, 2)" in err and "--label" in err
    assert not (tmp_path / "m.csv").exists()
    code, out, err = _run([*argv, "--label", "1"], capsys)
    assert code == 0, err
    (row,) = _rows(tmp_path / "m.csv")
    assert float(row["dice"]) == 1.0 and float(row["volume_ml_truth"]) == pytest.approx(0.18)
    code, _, err = _run([*argv, "--label", "3", "--overwrite"], capsys)
    assert code == 2 and "has no label 3 (it holds 1, 2)" in err
