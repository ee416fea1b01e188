"""Two CPU processes under torchrun (gloo) train one model: both ranks end with identical weights,
equal to the checkpoint rank 0 wrote, and only rank 0 wrote files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import yaml

from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case


def write_case_folder(folder, count: int, shape=(40, 36, 6)):
    """``images/`` + ``labels/`` NIfTI pairs of synthetic cases (spacing 1x1x2 mm)."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = synthetic_case(shape, seed=i)
        nib.save(nib.Nifti1Image(image, affine), folder / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), folder / "labels" / f"case{i}.nii.gz")
    return folder


def tiny_unet_config(path, **extra):
    settings = dict(
        model="unet",
        model_kwargs=dict(TINY_UNET_KWARGS),
        preprocessing=dict(TINY_UNET_PREPROCESSING),
        epochs=2,
        batch_size=4,
        steps_per_epoch=2,
        lr=1e-3,
        device="cpu",
        split=[0.5, 0.5, 0.0],
    )
    settings.update(extra)
    path.write_text(yaml.safe_dump(settings))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_train_one_model(tmp_path):
    cases = write_case_folder(tmp_path / "cases", 2)
    config = tiny_unet_config(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "napari_la_dinov2.cli",
        "train",
        "--cases",
        str(cases),
        "--config",
        str(config),
        "--out",
        str(run_dir),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d)/2: last weights ([0-9a-f]+)", done.stderr))
    assert set(digests) == {"0", "1"}, done.stderr[-3000:]
    assert digests["0"] == digests["1"]  # DDP kept the ranks in step, buffers included

    from napari_la_dinov2.cli.train import weights_digest
    from napari_la_dinov2.models import load_model

    assert weights_digest(load_model(run_dir / "last")) == digests["0"]
    resolved = yaml.safe_load((run_dir / "config.json").read_text(encoding="utf-8"))
    assert resolved["world_size"] == 2 and resolved["steps_per_epoch"] == 2
    # Only rank 0 wrote: one run directory, no stray files or temporaries anywhere.
    written = sorted(p.name for p in run_dir.iterdir())
    assert written == ["best", "config.json", "curves.png", "history.csv", "last", "split.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases", "run", "tiny.yaml"]
    assert (
        len((run_dir / "history.csv").read_text(encoding="utf-8").splitlines()) == 3
    )  # header + 2 epochs
