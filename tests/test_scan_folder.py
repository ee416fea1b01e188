"""`la-dinov2 segment IN_DIR --out OUT_DIR`: masks and stats.csv for a folder of scans, a bad
case reported without stopping the batch, finished cases skipped on a second run, a SIGKILL
mid-batch leaving only whole masks; and one output written by two processes at once."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_la_dinov2.cli import main
from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import build_model, save_checkpoint
from napari_la_dinov2.outputs import OutputGroup
from napari_la_dinov2.scan_folder import COLUMNS, STATS_NAME, UNFINISHED, find_cases
from napari_la_dinov2.volume_files import case_name
from tests.conftest import REPO_ROOT, TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case

SHAPE = (64, 56, 12)
AFFINE = np.diag([0.7, 0.7, 1.5, 1.0])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-unet")


def _write_cases(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        image, _ = synthetic_case(SHAPE, seed=seed)
        nib.save(nib.Nifti1Image(image, AFFINE), str(folder / f"{name}.nii.gz"))


def _stats(out: Path) -> dict[str, dict[str, str]]:
    with (out / STATS_NAME).open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        return {row["case"]: row for row in reader}


def _identity(path: Path) -> tuple[int, int]:
    # A rewritten file is a new inode (atomic rename) with a new mtime; a skipped one keeps both.
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def _segment(argv, capsys) -> tuple[int, str, str]:
    code = main(["segment", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_case_name_strips_every_input_suffix(tmp_path):
    assert case_name("/a/case01.nii.gz") == "case01"
    assert case_name("/a/case01.NII") == "case01"
    assert case_name("b/x.y.nrrd") == "x.y"
    assert case_name("study.zip") == "study"
    assert case_name("seg.dcm") == "seg"
    assert case_name("/data/patient 7/") == "patient 7"  # a DICOM folder: its own name
    assert case_name(".nii.gz") == ".nii.gz"  # nothing left to name: kept whole


def test_batch_reports_a_bad_case_and_skips_finished_ones(tmp_path, tiny_checkpoint, capsys):
    source, out = tmp_path / "in", tmp_path / "out"  # OUT_DIR is made
    _write_cases(source, ["a", "b"])
    (source / "broken.nii.gz").write_text("not an image\n")
    (source / "notes.txt").write_text("not a scan: ignored\n")
    argv = [source, "--out", out, "--checkpoint", tiny_checkpoint]

    code, stdout, err = _segment(argv, capsys)
    assert code == 2
    assert "error: broken: " in err and "could not be read" in err
    rows = _stats(out)
    assert set(rows) == {"a", "b", "broken"}
    assert rows["a"]["status"] == rows["b"]["status"] == "ok"
    assert "could not be read as NIFTI" in rows["broken"]["status"]
    assert float(rows["a"]["seconds"]) >= 0 and rows["a"]["model"]
    for name in ("a", "b"):
        mask = nib.load(str(out / f"{name}.nii.gz"))
        assert mask.shape == SHAPE and np.allclose(mask.affine, AFFINE)
    assert not (out / "broken.nii.gz").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz", STATS_NAME]
    assert "2 cases segmented, 0 already done, 1 failed" in stdout

    before = {name: _identity(out / f"{name}.nii.gz") for name in ("a", "b")}
    code, stdout, _ = _segment(argv, capsys)
    assert code == 2  # the broken case is tried again, and fails again
    assert "0 cases segmented, 2 already done, 1 failed" in stdout
    assert {name: _identity(out / f"{name}.nii.gz") for name in ("a", "b")} == before

    (source / "broken.nii.gz").unlink()
    code, stdout, _ = _segment([*argv, "--overwrite"], capsys)
    assert code == 0 and "2 cases segmented, 0 already done, 0 failed" in stdout
    after = {name: _identity(out / f"{name}.nii.gz") for name in ("a", "b")}
    assert all(after[name] != before[name] for name in after)
    assert set(_stats(out)) == {"a", "b"}  # --overwrite starts the table afresh


def test_batch_refuses_before_loading_the_model(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the batch was checked")

    monkeypatch.setattr("napari_la_dinov2.models.load_model", must_not_load)
    source, out = tmp_path / "in", tmp_path / "out"
    _write_cases(source, ["a"])
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"someone's expert mask")
    (tmp_path / "a_file").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    twice = tmp_path / "twice"
    _write_cases(twice, ["c"])
    (twice / "c.nrrd").write_bytes(b"x")
    refusals = {
        "unrecorded mask": ([source, "--out", out], "does not record it"),
        "out is the input": ([source, "--out", source], "input folder"),
        "out under a file": ([source, "--out", tmp_path / "a_file" / "o"], "is a file"),
        "out's parent missing": ([source, "--out", tmp_path / "no" / "o"], "does not exist"),
        "no scans": ([empty, "--out", tmp_path / "o2"], "holds no volume file"),
        "same name twice": ([twice, "--out", tmp_path / "o3"], "several scans named c"),
        "png in a batch": (
            [source, "--out", tmp_path / "o4", "--png", tmp_path / "p.png"],
            "--png",
        ),
    }
    for argv, expected in refusals.values():
        code, _, err = _segment([*argv, "--checkpoint", tiny_checkpoint], capsys)
        assert code == 2 and expected in err, err
        assert len(err.strip().splitlines()) == 1
    assert (out / "a.nii.gz").read_bytes() == b"someone's expert mask"
    assert not any((tmp_path / name).exists() for name in ("o2", "o3", "o4"))


def test_find_cases_takes_dicom_folders_and_zips(tmp_path):
    from tests.dicom_series import oblique_affine, oblique_stored, series_datasets, write_files

    _write_cases(tmp_path, ["vol"])
    write_files(tmp_path / "patient 7", series_datasets(oblique_stored(), oblique_affine()))
    (tmp_path / "study.zip").write_bytes(b"PK")  # a zip is a case; a bad one fails on its own
    (tmp_path / ".hidden.nii.gz").write_bytes(b"")
    (tmp_path / "not-dicom").mkdir()
    names = [name for name, _ in find_cases(tmp_path)]
    assert names == ["patient 7", "study", "vol"]


def _mask_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.nii.gz") if not p.name.startswith("."))


def test_sigkill_mid_batch_leaves_whole_masks_and_the_next_run_finishes(tmp_path, tiny_checkpoint):
    source, out = tmp_path / "in", tmp_path / "out"
    names = [f"case{i:02d}" for i in range(12)]
    _write_cases(source, names)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    argv = [sys.executable, "-m", "napari_la_dinov2.cli", "segment", str(source), "--out", str(out)]
    argv += ["--checkpoint", str(tiny_checkpoint)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not _mask_files(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()

    finished = _mask_files(out)
    assert 1 <= len(finished) < len(names), "the batch was not killed in the middle"
    for mask in finished:  # every visible mask is whole
        assert nib.load(str(mask)).get_fdata().shape == SHAPE
    rows = _stats(out)  # the table is whole too, and says which case was cut short
    assert all(rows[m.name[: -len(".nii.gz")]]["status"] in ("ok", UNFINISHED) for m in finished)
    kept = {m.name: _identity(m) for m in finished if rows[m.name[:-7]]["status"] == "ok"}

    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert [m.name for m in _mask_files(out)] == [f"{n}.nii.gz" for n in names]
    assert all(row["status"] == "ok" for row in _stats(out).values())
    assert {name: _identity(out / name) for name in kept} == kept  # finished ones skipped
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # temporaries cleaned


def test_two_writers_of_one_new_file_one_wins(tmp_path):
    target = tmp_path / "mask.nii.gz"
    first, second = OutputGroup(), OutputGroup()
    first.add(target, lambda tmp: tmp.write_bytes(b"first"))
    second.add(target, lambda tmp: tmp.write_bytes(b"second"))
    first.commit()
    with pytest.raises(InputError, match="created by someone else"):
        second.commit()
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_a_group_that_fails_leaves_none_of_its_files(tmp_path):
    def broken(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError), OutputGroup() as group:
        group.add(tmp_path / "mask.nii.gz", lambda tmp: tmp.write_bytes(b"mask"))
        group.add(tmp_path / "la.stl", broken)
    assert list(tmp_path.iterdir()) == []


def test_two_processes_segmenting_to_one_output(tmp_path, tiny_checkpoint):
    source, out = tmp_path / "in", tmp_path / "mask.nii.gz"
    _write_cases(source, ["a"])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    argv = [sys.executable, "-m", "napari_la_dinov2.cli", "segment", str(source / "a.nii.gz")]
    argv += ["--out", str(out), "--checkpoint", str(tiny_checkpoint)]
    processes = [
        subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for code, err in results if code == 2)
    assert loser_err.count("la-dinov2: error: ") == 1 and str(out) in loser_err
    assert nib.load(str(out)).shape == SHAPE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "mask.nii.gz"]
