"""Train the embedded default model on the 80 real LA 2018 cases (CPU is enough).

    python training/default_model/train_default.py [--data ../shared/data/la2018]
        [--out runs/default_model] [--seed 0] [--epochs 30] [--steps 100] [--threads 1]
        [--max-minutes 80] [--input-size 192] [--context 1] [--view through-plane] [--resume]

Split by patient with seed 0 whatever ``--seed`` is: 64 train / 8 validation (early stopping,
best checkpoint) / 8 test (never seen in training; scored by evaluate_default.py). ``--seed``
draws the initial weights, the slice sampling and the augmentation, so runs with other seeds
can be packed into an ensemble by evaluate_default.py (tried: see README.md). The run directory
gets the usual files (config.json, split.json, history.csv, curves.png, best/, last/);
``--resume`` goes on from last/. ``--view in-plane-1`` (or ``in-plane-2``) trains a model that
cuts the volumes along an in-plane axis instead (sagittal / coronal slices for these axial
scans): the members of the shipped multi-view model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from napari_la_dinov2.preprocess import FITS, VIEWS
from napari_la_dinov2.training import TrainConfig, finetune, load_case_folder
from napari_la_dinov2.training.events import EpochDone

# A compact 2D UNet (MONAI, 1.6 M parameters, 3.3 MB as float16): small enough to ship in the
# package and to run on a laptop CPU in a second or two per volume. The recipe's defaults
# make it 2.5D (each slice with one neighbour on either side as channels) at 192x192, which beat
# plain 2D at 160x160 on the validation patients (0.911 vs 0.899; see README.md).
DEFAULT_MODEL = dict(
    model="unet",
    model_kwargs=dict(channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2], num_res_units=2),
    preprocessing=dict(intensity="zscore"),  # size, context, view and fit: from the options
    loss="bce_dice",
    schedule="cosine",
    lr=1e-3,
    batch_size=16,
    foreground_fraction=0.6,
    split=(0.8, 0.1, 0.1),
    patience=1000,  # the cosine schedule decides the length; the best epoch is kept
    pretrained=False,
)


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _parser() -> argparse.ArgumentParser:
    here = Path(__file__).resolve()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("LA2018_DIR", str(here.parents[3] / "shared" / "data" / "la2018")),
    )
    parser.add_argument("--out", default="runs/default_model")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    # One thread by default: on a busy 2-core machine two threads wait on each other and a
    # step took 4x longer (7.7 s vs 1.7 s measured here); on an idle machine use all cores.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this long, keeping the best checkpoint so far",
    )
    parser.add_argument("--input-size", type=int, default=192, help="slice size (multiple of 16)")
    parser.add_argument(
        "--context",
        type=int,
        default=1,
        help="2.5D: neighbouring slices on each side fed as extra channels (0 = plain 2D)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="initial weights and sampling; the patient split stays seed 0 (ensemble members)",
    )
    parser.add_argument(
        "--view",
        choices=VIEWS,
        default="through-plane",
        help="the axis slices are cut along (see napari_la_dinov2.preprocess.view_axis)",
    )
    parser.add_argument(
        "--fit",
        choices=FITS,
        default="pad",
        help="how a slice becomes square: pad (no distortion) or stretch (an in-plane view's "
        "through-plane axis then gets as many pixels as its in-plane one)",
    )
    parser.add_argument("--resume", action="store_true")
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (DEFAULT_MODEL) with the slices, view, length and seed of the arguments."""
    settings = dict(DEFAULT_MODEL)
    settings["preprocessing"] = {  # the network's input channels follow from the context
        **settings["preprocessing"],
        "input_size": args.input_size,
        "context": args.context,
        "branches": [{"view": args.view, "fit": args.fit}],
    }
    return TrainConfig(
        **settings,
        output_dir=args.out,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        resume=args.resume,
        seed=args.seed,
        split_seed=0,
    )


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cases = load_case_folder(args.data)
    print(f"{len(cases)} cases from {args.data}", flush=True)
    config = _config(args)

    def report(event):
        if isinstance(event, EpochDone):
            print(
                f"epoch {event.epoch:3d}/{event.epochs}  loss {event.train_loss:.4f}"
                f"  val Dice {event.val_dice:.4f}  best {event.best_val_dice:.4f}"
                f"  {event.seconds:.0f} s  (total {time.perf_counter() - started:.0f} s)",
                flush=True,
            )

    deadline = started + 60 * args.max_minutes if args.max_minutes else None
    Path(args.out).mkdir(parents=True, exist_ok=True)  # the model card reads the settings back
    recorded = {**vars(args), "cpu": cpu_name()}  # the model card names the training machine
    (Path(args.out) / "recipe_args.json").write_text(json.dumps(recorded, indent=2) + "\n")
    result = finetune(
        cases,
        config,
        progress=report,
        stop=lambda: deadline is not None and time.perf_counter() > deadline,
    )
    minutes = (time.perf_counter() - started) / 60
    print(
        f"best validation Dice {result.best_val_dice:.4f}; {minutes:.1f} min; "
        f"best checkpoint in {result.best_checkpoint}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
