"""Hostile training commands: an existing run, outputs and settings that would overwrite or
mislead, refused in one line with nothing touched; and a training run killed at any moment
resumes to a complete history. Nothing unpickles (test_hostile.no_pickle)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest

from napari_la_dinov2.cli import main
from tests.test_distributed import tiny_unet_config, write_case_folder
from tests.test_hostile import checkpoint, hostile_checkpoint, no_pickle, refused  # noqa: F401


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_case_folder(tmp_path_factory.mktemp("cases"), 3)


def _fake_run(folder: Path) -> Path:
    for sub in ("best", "last"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "model.safetensors").write_bytes(b"weights")
        (folder / sub / "config.json").write_text("{}")
    (folder / "config.json").write_text("{}")
    (folder / "history.csv").write_text("epoch,train_loss,val_dice,lr,seconds\n1,1,0.5,1,1\n")
    return folder


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


TRAIN_REFUSALS = {
    "an existing run": (lambda t: _fake_run(t / "run"), [], "already holds a run"),
    "resume and overwrite": (lambda t: _fake_run(t / "run"), ["--resume", "--overwrite"], "one"),
    "resume without last/": (lambda t: t / "run", ["--resume"], "no checkpoint to resume"),
    "the run is a file": (lambda t: _file(t / "run"), [], "is a file"),
    "its parent is a file": (lambda t: _file(t / "parent") / "run", [], "is a file"),
    "under /proc": (lambda t: Path("/proc/la-dinov2-run"), [], "cannot be written"),
    "lr=.nan": (lambda t: t / "run", ["--set", "lr=.nan"], "lr a positive number"),
    "feature_cache=on for a UNet": (
        lambda t: t / "run",
        ["--set", "feature_cache=on"],
        "feature_cache 'on' needs",
    ),
    "widths 1e9": (
        lambda t: t / "run",
        ["--set", "model_kwargs.channels=[1000000000,1000000000]", "model_kwargs.strides=[2]"],
        "widths",
    ),
    "device meta": (lambda t: t / "run", ["--device", "meta"], "unknown device"),
    "an unofficial checkpoint backbone": (
        lambda t: t / "run",
        ["--model", "UNOFFICIAL"],
        "--backbone-source",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_REFUSALS))
def test_train_refusals_touch_nothing(
    case,
    cases,
    checkpoint,  # noqa: F811 (the fixture imported from test_hostile)
    tmp_path,
    capfd,
):
    make, extra, message = TRAIN_REFUSALS[case]
    run_dir = make(tmp_path)
    if "UNOFFICIAL" in extra:
        edit = lambda c: c.update(  # noqa: E731
            model="res50_unet", model_kwargs={"weights_source": "evil/resnet"}, preprocessing=None
        )
        extra = ["--model", hostile_checkpoint(checkpoint, tmp_path / "ck", edit)]
    config = tiny_unet_config(tmp_path / "cfg.yaml")
    argv = ["train", "--cases", cases, "--config", config, "--out", run_dir, *extra]
    refused(argv, capfd, tmp_path, cases, message=message)
    if not str(run_dir).startswith("/proc"):
        assert not (run_dir.is_dir() and (run_dir / "split.json").exists())


def test_case_folder_with_two_files_of_one_name(tmp_path, capfd):
    cases = write_case_folder(tmp_path / "cases", 2)
    image = nib.load(cases / "images" / "case0.nii.gz")
    nib.save(image, cases / "images" / "case0.nii")
    config = tiny_unet_config(tmp_path / "cfg.yaml")
    argv = ["train", "--cases", cases, "--config", config, "--out", tmp_path / "run"]
    err = refused(argv, capfd, tmp_path, message="two files for case 'case0'")
    assert "case0.nii and case0.nii.gz" in err


# --- A training run killed at any moment resumes -----------------------------------------------


def _complete(run_dir: Path) -> None:
    """Whatever a kill left: each checkpoint is whole and loads, the history parses."""
    from napari_la_dinov2.models import load_model
    from napari_la_dinov2.training.state import read_history

    for sub in ("best", "last"):
        if (run_dir / sub).exists():
            load_model(run_dir / sub)
    if (run_dir / "last").exists():
        names = {p.name for p in (run_dir / "last").iterdir()}
        assert {"optimizer.safetensors", "optimizer.json", "scheduler.json"} <= names
    read_history(run_dir / "history.csv")


@pytest.mark.parametrize("delay", [0.0, 0.4, 1.2])
def test_training_killed_at_any_moment_resumes(delay, cases, tmp_path, capfd):
    """SIGKILL a real `la-dinov2 train` once last/ exists (at several moments, while it saves
    later epochs), then --resume: exit 0, a history of every epoch once, nothing temporary."""
    epochs = 8
    config = tiny_unet_config(
        tmp_path / "cfg.yaml", epochs=epochs, patience=epochs, split=[0.67, 0.33, 0.0]
    )
    run_dir = tmp_path / "run"
    argv = ["train", "--cases", str(cases), "--config", str(config), "--out", str(run_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_la_dinov2.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "last").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the run never wrote last/"
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished
    _complete(run_dir)
    assert main([*argv, "--resume"]) == 0, capfd.readouterr().err[-2000:]
    history = (run_dir / "history.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(1, epochs + 1)]
    _complete(run_dir)
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
