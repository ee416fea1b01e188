"""Reproduce the paper's Table 1: every model trained on the full training split with its own
config (this folder), evaluated on the same held-out test patients; one command.

    python training/table1/reproduce_table1.py --cases ../shared/data/la2018 --out runs/table1
        [--models unet dinov2_vits14 ...] [--set device=cuda precision=bf16]

Each model trains with ``la-dinov2 train``'s engine (its run directory: runs/table1/<model>),
then its best checkpoint segments the test patients named in the run's split.json (the same
for every model: the split seed is shared) with the users' inference path. Writes, with the
statistics of ``la-dinov2 evaluate`` (napari_la_dinov2.scoring.report):

- table1.md: Dice, IoU, HD95, ASSD and LA volume error as mean ± SD [bootstrap 95% CI] over the
  test patients, each model's parameters, GFLOPs per slice and seconds per volume (timed on the
  first test patient on this machine's device), and paired Wilcoxon tests between every pair;
- table1.csv (one row per model), pairs.csv (the tests), cases.csv (one row per model and case).

A model whose test rows exist already is not trained again (delete its folder to redo it); its
cost is kept in <model>/cost.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from napari_la_dinov2.inference import resolve_device
from napari_la_dinov2.models import load_model
from napari_la_dinov2.scoring.metrics import write_cases_csv
from napari_la_dinov2.scoring.model_cost import model_cost, time_volume
from napari_la_dinov2.scoring.report import compare, write_report
from napari_la_dinov2.training import finetune, load_case_folder
from napari_la_dinov2.training.events import EpochDone
from napari_la_dinov2.training.fewshot import evaluate_model
from napari_la_dinov2.training.state import atomic_write_text
from napari_la_dinov2.training.train_config_file import (
    apply_overrides,
    load_config_file,
    train_config_from,
)

HERE = Path(__file__).resolve().parent
MODELS = [
    "unet",
    "attention_unet",
    "res50_unet",
    "dinov2_vits14",
    "dinov2_vitb14",
    "dinov2_vitl14",
    "dinov2_vitg14",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True)
    parser.add_argument("--out", default="runs/table1")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cases = load_case_folder(args.cases)
    by_name = {c.name: c for c in cases}
    out = Path(args.out)
    results, costs = {}, {}
    for model in args.models:
        run_dir = out / model
        rows_file = run_dir / "test_cases.csv"
        if rows_file.is_file():
            with rows_file.open() as handle:
                rows = [
                    {k: (v if k == "case" else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(handle)
                ]
            device = "auto"
        else:
            settings = load_config_file(HERE / f"{model}.yaml")
            settings["output_dir"] = str(run_dir)
            config = train_config_from(apply_overrides(settings, args.overrides))
            result = finetune(cases, config, progress=_print)
            test = json.loads((run_dir / "split.json").read_text())["test"]
            rows = evaluate_model(
                result.best_checkpoint, [by_name[n] for n in test], device=config.device
            )
            write_cases_csv(rows_file, rows)
            device = config.device
        results[model] = rows
        costs[model] = _cost(run_dir, by_name[rows[0]["case"]], device)
        comparison = compare(results, costs=costs)
        write_report(
            comparison,
            markdown=out / "table1.md",
            summary_csv=out / "table1.csv",
            pairs_csv=out / "pairs.csv",
            cases_csv=out / "cases.csv",
            title="Table 1: test patients",
        )
        print((out / "table1.md").read_text(), flush=True)


def _cost(run_dir: Path, case, device: str) -> dict:
    """Parameters, GFLOPs per slice and seconds per volume of the run's best checkpoint (timed
    on ``case``), computed once and kept in run_dir/cost.json."""
    cached = run_dir / "cost.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    checkpoint = run_dir / "best"
    cost = model_cost(checkpoint)
    cost["seconds_per_volume"] = time_volume(
        load_model(checkpoint), case.image, case.meta, device=device
    )
    cost["timing"] = f"measured: {case.name} on {resolve_device(device).type}"
    atomic_write_text(cached, json.dumps(cost, indent=2))
    return cost


def _print(event) -> None:
    if isinstance(event, EpochDone):
        print(
            f"  epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.4f}, "
            f"val Dice {event.val_dice:.4f}, {event.seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
