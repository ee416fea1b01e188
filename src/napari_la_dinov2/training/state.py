"""Run-directory files: checkpoints, optimizer state without pickle, history CSV, curves.

The optimizer state is flattened into safetensors + JSON so that resuming a run never
unpickles anything. ``last/`` is written with its optimizer and schedule state as one unit, so
a run killed at any moment resumes from a complete ``last/``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..models import save_checkpoint
from ..outputs import check_output_folder
from ..volume_files import atomic_write
from .schedule import save_schedule


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(
        json.dumps({"param_groups": state["param_groups"], "scalars": scalars})
    )


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    tensors = load_file(str(directory / "optimizer.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_history(history: list[dict], path: Path) -> None:
    if not history:
        return

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [
            {k: (float(v) if k != "epoch" else int(v)) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Training loss and validation Dice against epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(7, 3.2), dpi=100)
    loss_axes, dice_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row["train_loss"] for row in history], marker="o", ms=3)
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    dice_axes.plot(epochs, [row["val_dice"] for row in history], marker="o", ms=3, color="C2")
    dice_axes.set(xlabel="epoch", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    for axes in (loss_axes, dice_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


def save_run_epoch(
    run_dir: Path,
    model,
    optimizer,
    scheduler,
    history: list[dict],
    provenance: dict,
    improved: bool,
) -> None:
    """What one epoch leaves in the run folder: ``best/`` when it improved, ``last/`` with the
    optimizer and schedule state, history.csv and curves.png; each file or folder replaced
    atomically."""

    def save_training_state(folder: Path) -> None:
        save_optimizer(optimizer, folder)
        save_schedule(scheduler, folder)

    if improved:
        save_checkpoint(model, run_dir / "best", provenance)
    save_checkpoint(model, run_dir / "last", provenance, extra=save_training_state)
    write_history(history, run_dir / "history.csv")
    title = (
        f"{model.display_name} fine-tuned on {len(provenance['this_run']['trained_on'])} case(s)"
    )
    plot_curves(history, run_dir / "curves.png", title)


RUN_FILES = ("best", "last", "config.json", "history.csv", "split.json", "curves.png")


def check_run_dir(run_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Check a run folder before any work: it can be written, and an existing run is only
    continued (``resume``) or replaced (``overwrite``) when asked, never silently."""
    run_dir = Path(run_dir).expanduser()
    if resume and overwrite:
        raise InputError("--resume continues a run and --overwrite replaces it; give one.")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir} is a file; the run folder must be a folder.")
    existing = sorted(n for n in RUN_FILES if (run_dir / n).exists()) if run_dir.is_dir() else []
    if existing and not (resume or overwrite):
        raise InputError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it, --overwrite to replace it, or choose another folder."
        )
    check_output_folder(run_dir, allow_missing=True)  # a file in the way, /proc, read-only
    return run_dir


def clear_replaced_run(run_dir: Path) -> None:
    """Remove the files of the run a new one replaces (``--overwrite``), once the new run has
    its model and settings and is about to write its own. Left in place, a new run stopped
    before its first epoch ended would leave the old ``best/`` and ``last/`` beside its own
    config.json, and a later ``--resume`` would continue the old weights under new settings."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def recover_after_kill(run_dir: Path) -> None:
    """Tidy what a killed run's atomic writes left: the hidden staging copies are removed,
    and a checkpoint folder caught between its two renames (``.last.old-PID`` with no
    ``last/``) is put back."""
    if not run_dir.is_dir():
        return
    for path in sorted(run_dir.glob(".*")):
        name = next((n for n in RUN_FILES if path.name.startswith(f".{n}.")), None)
        if name is None:
            continue
        if path.name.startswith(f".{name}.old-") and not (run_dir / name).exists():
            os.replace(path, run_dir / name)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
