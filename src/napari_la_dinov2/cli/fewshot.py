"""`la-dinov2 fewshot --cases FOLDER --models ... --patients 1 10 all --seeds 0 1 2 --out DIR`:
data-level few-shot curves (the paper's Fig. 2) on a fixed held-out test set.

Settings: a YAML file (``--config``; FewShotConfig keys, with the fine-tuning settings under
``train:`` and per-model ones under ``model_overrides:``), then the flags, then ``--set``. The
resolved settings go to DIR/fewshot_config.yaml; results to DIR/results.csv, summary.md and
fewshot.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .numbers import SEED
from .train import ProgressBars, add_config_arguments


def _budget(text: str):
    if text.lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or 'all', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], not {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fewshot",
        help="few-shot curves: train on 1, 10, all patients (or fractions), several seeds",
        description="Train each model on nested, seeded subsets of the training patients and "
        "evaluate every run on the same held-out test patients.",
    )
    parser.add_argument("--cases", required=True, metavar="FOLDER", help="annotated cases")
    parser.add_argument("--models", nargs="+", metavar="MODEL", help="models (default: unet)")
    parser.add_argument(
        "--patients", nargs="+", type=_budget, metavar="N", help="patient budgets, e.g. 1 10 all"
    )
    parser.add_argument(
        "--fractions", nargs="+", type=_fraction, metavar="F", help="e.g. 0.01 0.05 0.1 0.5 1"
    )
    parser.add_argument("--seeds", nargs="+", type=SEED, metavar="S", help="e.g. 0 1 2")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--device", help="auto, cpu, cuda[:N], mps (default: auto)")
    add_config_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..training import load_case_folder
    from ..training.events import RunStarted
    from ..training.fewshot import run_fewshot
    from ..training.train_config_file import (
        apply_overrides,
        fewshot_config_from,
        load_config_file,
        to_yaml,
    )

    settings = load_config_file(args.config)
    for key in ("models", "patients", "fractions", "seeds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["output_dir"] = args.out
    if args.device:
        settings.setdefault("train", {})["device"] = args.device
    config = fewshot_config_from(apply_overrides(settings, args.overrides))
    config.budgets()  # checks before reading any case
    cases = load_case_folder(args.cases)
    out = Path(config.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "fewshot_config.yaml").write_text(to_yaml(config))

    bars = ProgressBars()

    def progress(event) -> None:
        if isinstance(event, RunStarted):
            bars.close()
            print(
                f"run {event.index + 1}/{event.total}: {event.model}, {event.n_train} training "
                f"patient(s) ({event.budget_kind} {event.budget}), seed {event.seed}",
                file=sys.stderr,
            )
        else:
            bars(event)

    try:
        rows = run_fewshot(cases, config, progress=progress)
    finally:
        bars.close()
    print((out / "summary.md").read_text() if rows else "no run finished.")
    print(f"results: {out / 'results.csv'}, plot: {out / 'fewshot.png'}")
    return 0
