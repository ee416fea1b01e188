"""Few-shot accuracy of the CNN baselines on real data: test Dice with 1, 4 and 16 training
patients of ../shared/data/la2018 (80 LGE-MRI cases), within a stated CPU budget.

Split (fixed, seeded): 16 test patients, 4 validation patients (early stopping / best
checkpoint), and a pool of 60 from which each seed draws nested training subsets. Every run has
the same step budget (``--epochs`` x ``--steps`` steps of ``--batch`` slices, cosine schedule),
so a curve shows what more patients buy for the same compute. Test Dice is 3D, per patient,
after the users' inference and post-processing (largest component, opening/closing).

CPU budget of the default settings: 2 models x 3 budgets x 1 seed = 6 runs of 8 x 40 = 320
steps (batch 16, 160x160) plus 16 test volumes each; about 20-25 minutes on 2 cores when the
machine is otherwise idle (the time of each run is printed). Settings that depart from the
paper to fit that budget: 160x160 inputs instead of 320, compact networks (16..256 channels),
lr 1e-3 with a cosine schedule instead of a constant 1e-4, BCE + Dice loss; and, like the
embedded default model, 2.5D input (each slice with one neighbour on either side as channels;
``--context 0`` for plain 2D slices as in the paper).

    python benchmarks/accuracy_fewshot.py [--models unet attention_unet] [--seeds 0]
        [--patients 1 4 16] [--epochs 8] [--steps 40] [--input-size 160] [--context 1]
        [--out runs/accuracy_fewshot]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_la_dinov2.training import TrainConfig, load_case_folder
from napari_la_dinov2.training.events import RunStarted
from napari_la_dinov2.training.fewshot import FewShotConfig, run_fewshot

COMPACT = dict(channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2])


def data_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("LA2018_DIR", root.parent / "shared" / "data" / "la2018"))
    if not (folder / "images").is_dir():
        sys.exit(f"LA 2018 data not found at {folder}; set LA2018_DIR.")
    return folder


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet", "attention_unet"])
    parser.add_argument("--patients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=160)
    parser.add_argument(
        "--context",
        type=int,
        default=1,
        help="2.5D: neighbouring slices on each side as extra channels, as the default model",
    )
    parser.add_argument("--test", type=int, default=16, help="held-out test patients")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="runs/accuracy_fewshot")
    return parser.parse_args()


def _config(args: argparse.Namespace, n: int) -> FewShotConfig:
    """The experiment these arguments ask for, on ``n`` cases of which 4 validate."""
    split = (1 - (4 + args.test) / n, 4 / n, args.test / n)
    train = TrainConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        lr=1e-3,
        loss="bce_dice",
        schedule="cosine",
        patience=10_000,  # the fixed step budget decides; the best epoch is kept
        device="cpu",
        preprocessing={
            "input_size": args.input_size,
            "context": args.context,
            "channels": 2 * args.context + 1,
        },
    )
    overrides = {
        m: {"model_kwargs": {**COMPACT, "in_channels": 2 * args.context + 1}}
        for m in ("unet", "attention_unet")
    }
    return FewShotConfig(
        models=args.models,
        patients=args.patients,
        seeds=args.seeds,
        split=split,
        split_seed=0,
        output_dir=args.out,
        train=train,
        model_overrides=overrides,
        resume=False,
    )


def _print_table(rows: list[dict]) -> None:
    print("\nTest Dice, mean ± SD over the test patients (pooled over seeds):")
    print(f"{'model':<16}{'patients':>9}{'Dice':>16}{'IoU':>8}{'train s':>9}")
    for model in dict.fromkeys(r["model"] for r in rows):
        for patients in sorted({r["n_train"] for r in rows if r["model"] == model}):
            mine = [r for r in rows if r["model"] == model and r["n_train"] == patients]
            dices = np.array([r["dice"] for r in mine])
            ious = np.array([r["iou"] for r in mine])
            seconds = np.mean(sorted({r["train_seconds"] for r in mine}))
            print(
                f"{model:<16}{patients:>9}{dices.mean():>10.3f} ± {dices.std():.3f}"
                f"{ious.mean():>8.3f}{seconds:>9.0f}"
            )


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    folder = data_dir()
    started = time.perf_counter()
    cases = load_case_folder(folder)
    n = len(cases)

    def progress(event):
        if isinstance(event, RunStarted):
            print(
                f"[{time.perf_counter() - started:6.0f} s] run {event.index + 1}/{event.total}: "
                f"{event.model}, {event.n_train} patient(s), seed {event.seed}",
                flush=True,
            )

    rows = run_fewshot(cases, _config(args, n), progress=progress)
    minutes = (time.perf_counter() - started) / 60
    print(f"\n# {' '.join(sys.argv)}")
    print(f"data: {folder} ({n} cases; {args.test} test, 4 validation, {n - 4 - args.test} pool)")
    print(
        f"machine: {platform.machine()}, {args.threads} torch threads; per run {args.epochs} x "
        f"{args.steps} steps of {args.batch} slices at {args.input_size}x{args.input_size}, "
        f"{f'2.5D (context {args.context})' if args.context else '2D'}; "
        f"total {minutes:.1f} min"
    )
    _print_table(rows)
    print(f"\nper-case rows: {Path(args.out) / 'results.csv'}; plot: fewshot.png")


if __name__ == "__main__":
    main()
