"""Hostile folders of scans and models: a FIFO among the cases, a link out of the folder, a case
name holding a newline, a model named ``a|b`` in the markdown report, a checkpoint whose weights
are all NaN."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_la_dinov2.cli import main
from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import build_model, save_checkpoint
from napari_la_dinov2.scan_folder import STATS_NAME, find_cases
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from tests.test_hostile import refused

SHAPE = (40, 36, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _tiny_checkpoint(folder: Path, fill: float | None = None) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    if fill is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(fill)
    return save_checkpoint(model, folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def _case(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(synthetic_case(SHAPE, seed=seed)[0], AFFINE), path)
    return path


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / STATS_NAME).open(newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_a_fifo_among_the_cases_gets_its_row(tmp_path, checkpoint, capfd):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    os.mkfifo(source / "pipe.nii.gz")  # reading it would wait forever for a writer
    argv = ["segment", source, "--out", out, "--checkpoint", checkpoint, "--device", "cpu"]
    assert main([str(a) for a in argv]) == 2
    assert "is not a regular file" in _rows(out)["pipe"]["status"]
    assert "error: pipe: " in capfd.readouterr().err


def test_a_link_out_of_the_folder_is_refused_and_named(tmp_path, capfd):
    source = tmp_path / "in"
    _case(source / "a.nii.gz")
    outside = _case(tmp_path / "elsewhere" / "b.nii.gz", seed=1)
    (source / "b.nii.gz").symlink_to(outside)
    (source / "a2.nii.gz").symlink_to(source / "a.nii.gz")  # a link inside is a case
    with pytest.raises(InputError, match=r"b\.nii\.gz is a link to .*elsewhere.*outside"):
        find_cases(source)
    (source / "b.nii.gz").unlink()
    assert [name for name, _ in find_cases(source)] == ["a", "a2"]
    (source / "b.nii.gz").symlink_to(outside)
    refused(
        ["segment", source, "--out", tmp_path / "out", "--checkpoint", "any"],
        capfd,
        source,
        message="outside the folder",
    )
    assert not (tmp_path / "out").exists()


def test_a_case_name_with_a_newline_stays_on_one_line(tmp_path, checkpoint, capfd):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    (source / "bad\nname.nii.gz").write_text("not an image\n")
    argv = ["segment", source, "--out", out, "--checkpoint", checkpoint, "--device", "cpu"]
    assert main([str(a) for a in argv]) == 2
    err = capfd.readouterr().err
    assert "error: bad\\nname: " in err, err
    assert not any(line.startswith("name") for line in err.splitlines()), err
    assert "could not be read" in _rows(out)["bad\nname"]["status"]


def test_a_model_named_with_a_pipe_keeps_the_markdown_tables(tmp_path, capfd):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k in range(3):
        mask = np.zeros((16, 16, 4), np.uint8)
        mask[4 : 10 + k, 4:10, 1:3] = 1
        for folder, extra in ((gt, 0), (pred, 1)):
            folder.mkdir(exist_ok=True)
            shifted = np.roll(mask, extra, axis=0)
            nib.save(nib.Nifti1Image(shifted, np.eye(4)), folder / f"c{k}.nii.gz")
    report = tmp_path / "report.md"
    argv = [
        "evaluate",
        "--ref",
        gt,
        "--pred",
        f"a|b={pred}",
        "--pred",
        f"c={gt}",
        "--markdown",
        report,
        "--resamples",
        100,
    ]
    assert main([str(a) for a in argv]) == 0, capfd.readouterr().err
    text = report.read_text(encoding="utf-8")
    assert "a\\|b" in text
    for table in text.split("\n\n"):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        widths = {line.replace("\\|", "").count("|") for line in rows}
        assert len(widths) <= 1, table


def test_a_checkpoint_of_nan_weights_is_refused(tmp_path, capfd):
    nan = _tiny_checkpoint(tmp_path / "nan", fill=float("nan"))
    image = _case(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    refused(
        ["segment", image, "--out", out / "la.nii.gz", "--checkpoint", nan, "--device", "cpu"],
        capfd,
        out,
        message="holds NaN or infinite weights",
    )
