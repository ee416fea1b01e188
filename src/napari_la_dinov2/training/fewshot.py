"""Data-level few-shot, as in the paper: train each model on a budget of the training patients,
with several seeds, and evaluate on a fixed held-out test set.

Budgets are counted in patients (cases), never in slices: a model trains on all slices of the
patients it is given, so a budget says how many annotated volumes a user needs. Two kinds:

- ``patients``: a number of training patients (e.g. 1, 10) or ``'all'``;
- ``fractions``: a fraction of the training patients (e.g. 0.05), rounded to the nearest whole
  patient and never below one.

Subsets: the cases are split once by patient (``split``, seeded by ``split_seed``) into a
training pool, a validation set and a test set; validation (early stopping) and test are the
same for every run, and no subset ever draws from them. For each seed the training pool is
shuffled once and a budget of k patients takes the first k, so the subsets are nested: a larger
budget holds every patient of a smaller one (for the same seed), and a curve shows the effect
of adding data rather than of drawing other patients. Two budgets that come to the same number
of patients share one training run.

Results (``output_dir``)::

    fewshot_config.json   the resolved settings, the fixed split and each run's training patients
    results.csv           one row per (model, budget, seed, test case): Dice, IoU, HD95, ASSD,
                          LA volumes, plus the run's number of training patients and best
                          validation Dice
    summary.md            per model and budget: mean +- SD over seeds of the per-run mean Dice
                          (and IoU), a bootstrap 95% CI over the test cases, and paired
                          Wilcoxon tests between models (see :func:`write_summary`)
    fewshot.png           Dice against the number of training patients (and against the
                          fraction), one line per model, mean over seeds with a +-SD band
                          (the paper's Fig. 2)
    runs/<model>/n<k>_seed<s>/   each fine-tuning run directory (best/, last/, history.csv ...)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CancelledError, InputError, is_cancelled
from ..inference import Predictor
from ..models import load_model
from ..scoring.metrics import evaluate_case, write_csv
from .cases import Case, split_cases
from .events import RunDone, RunStarted
from .fewshot_results import plot_fewshot, write_summary
from .finetune import finetune
from .state import atomic_write_text
from .train_config import TrainConfig

# The scores and timings of a results row: numbers, read back as floats.
_NUMBER_FIELDS = (
    "dice",
    "iou",
    "hd95_mm",
    "assd_mm",
    "volume_ml_pred",
    "volume_ml_truth",
    "best_val_dice",
    "train_seconds",
)
RESULT_FIELDS = (
    "model",
    "budget_kind",
    "budget",
    "n_train",
    "seed",
    "case",
    *_NUMBER_FIELDS,
    "run_dir",
)


@dataclass
class FewShotConfig:
    """What a few-shot experiment runs. ``models``: any :func:`~..models.load_model` source
    (registry name, checkpoint folder, hub repo id). ``train``: the fine-tuning settings shared by
    every run (its model, output_dir and seed are set per run); ``model_overrides``: per model
    label, TrainConfig fields that differ (e.g. a smaller ``model_kwargs`` for a test)."""

    models: list[str] = field(default_factory=lambda: ["unet"])
    patients: list[int | Literal["all"]] = field(default_factory=lambda: [1, 10, "all"])
    fractions: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    output_dir: str = "runs/fewshot"
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    test_cases: list[str] | None = None  # fixed test set by name (default: the split's test)
    val_cases: list[str] | None = None  # fixed validation set by name (default: the split's)
    train: TrainConfig = field(default_factory=TrainConfig)
    model_overrides: dict = field(default_factory=dict)
    resume: bool = True  # reuse a run whose test metrics are already on disk

    def budgets(self) -> list[tuple[str, object]]:
        """``[(kind, value), ...]`` in the order given, checked."""
        out = []
        for value in self.patients:
            if value != "all" and not (isinstance(value, int) and value >= 1):
                raise InputError(f"patients must be whole numbers >= 1 or 'all', not {value!r}.")
            out.append(("patients", value))
        for value in self.fractions:
            if not 0.0 < float(value) <= 1.0:
                raise InputError(f"fractions must lie in (0, 1], not {value!r}.")
            out.append(("fraction", float(value)))
        if not out:
            raise InputError("give at least one budget (patients or fractions).")
        if not self.models or not self.seeds:
            raise InputError("give at least one model and one seed.")
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_label(source: str) -> str:
    """A short name for a model source: the registry name, or a folder's or repo's last part."""
    return Path(str(source).rstrip("/")).name or str(source)


def budget_size(kind: str, value, pool: int) -> int:
    """Number of training patients for a budget, out of ``pool``."""
    if kind == "patients":
        return pool if value == "all" else min(int(value), pool)
    return max(1, min(pool, int(math.floor(value * pool + 0.5))))


def fixed_split(names: list[str], config: FewShotConfig) -> dict[str, list[str]]:
    """Training pool, validation and test case names; test and validation are the same for
    every run. Names given in ``test_cases``/``val_cases`` must exist."""
    names = sorted(names)
    split = split_cases(names, config.split, config.split_seed)
    for key, given in (("test", config.test_cases), ("val", config.val_cases)):
        if given is not None:
            missing = sorted(set(given) - set(names))
            if missing:
                raise InputError(f"{key} cases not found among the cases: {', '.join(missing)}.")
            split[key] = sorted(given)
    if set(split["test"]) & set(split["val"]):
        raise InputError("a case cannot be both a validation and a test case.")
    held_out = set(split["test"]) | set(split["val"])
    split["train"] = [n for n in names if n not in held_out]
    if not split["train"]:
        raise InputError("no case is left for training after the validation and test sets.")
    if not split["test"]:
        raise InputError("the few-shot test set is empty; give more cases or test_cases.")
    return split


def training_subset(pool: list[str], n: int, seed: int) -> list[str]:
    """The first ``n`` patients of the pool shuffled by ``seed``: seeded and nested."""
    order = sorted(pool)
    random.Random(f"fewshot-{seed}").shuffle(order)
    return order[:n]


def evaluate_model(checkpoint, cases: list[Case], stop=None, device="auto") -> list[dict]:
    """Predict each test case with the users' inference path and score it (Dice, IoU, HD95,
    ASSD, volumes)."""
    predictor = Predictor(load_model(checkpoint), device=device)
    rows = []
    for case in cases:
        pred = predictor.predict(case.image, case.meta, cancel=stop)
        rows.append({"case": case.name, **evaluate_case(pred, case.labels, case.meta.spacing)})
    return rows


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in _NUMBER_FIELDS:
            row[key] = float(row[key])
        row["n_train"], row["seed"] = int(row["n_train"]), int(row["seed"])
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, RESULT_FIELDS)


def run_fewshot(cases: list[Case], config: FewShotConfig, progress=None, stop=None) -> list[dict]:
    """Train every (model, budget, seed) with :func:`~.finetune.finetune`, evaluate on the fixed
    test cases and write results.csv, summary.md and fewshot.png (module docstring).

    ``progress(event)``: :class:`~.events.RunStarted` before each run, then that run's
    finetune events with ``run`` set to its index, then :class:`~.events.RunDone`. ``stop``
    (threading.Event or callable): ends the current run as finetune does and starts no other;
    what finished is still written. Returns the result rows.
    """
    budgets = config.budgets()
    by_name = {c.name: c for c in cases}
    if len(by_name) != len(cases):
        raise InputError("two cases have the same name; give each case a unique name.")
    split = fixed_split(list(by_name), config)
    out = Path(config.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    labels = [model_label(m) for m in config.models]
    if len(set(labels)) != len(labels):
        raise InputError("two models have the same name; give distinct checkpoint folders.")
    plan, subsets = _plan(config, budgets, labels, split["train"])
    _write_resolved_config(out / "fewshot_config.json", config, split, subsets)
    val_set = [by_name[n] for n in split["val"]]  # empty: finetune validates on training
    test_set = [by_name[n] for n in split["test"]]
    rows: list[dict] = []
    done_runs: dict[tuple, list[dict]] = {}  # (label, n, seed) -> evaluated rows
    for index, (model, label, kind, value, n, seed) in enumerate(plan):
        if is_cancelled(stop):
            break
        if progress:
            progress(_run_event(RunStarted, plan, index))
        key = (label, n, seed)
        if key not in done_runs:
            try:
                train_cases = [by_name[name] for name in subsets[(n, seed)]]
                done_runs[key] = _train_and_test(
                    model,
                    label,
                    train_cases,
                    val_set,
                    test_set,
                    seed,
                    out / "runs" / label / f"n{n}_seed{seed}",
                    config,
                    _tagged(progress, index),
                    stop,
                )
            except CancelledError:
                break
        budget = {"model": label, "budget_kind": kind, "budget": value, "n_train": n}
        rows += [{**budget, "seed": seed, **row} for row in done_runs[key]]
        _write_rows(out / "results.csv", rows)
        if progress:
            dice = float(np.mean([row["dice"] for row in done_runs[key]]))
            progress(_run_event(RunDone, plan, index, dice=dice))
        if is_cancelled(stop):
            break
    if rows:
        write_summary(out / "summary.md", rows)
        plot_fewshot(rows, out / "fewshot.png")
    return rows


def _plan(config: FewShotConfig, budgets: list, labels: list[str], pool: list[str]):
    """Every run, as (model, label, budget kind, budget, patients, seed), model by model, and
    the training patients of each (patients, seed): nested subsets of the pool."""
    plan = []
    for model, label in zip(config.models, labels):
        for kind, value in budgets:
            for seed in config.seeds:
                plan.append((model, label, kind, value, budget_size(kind, value, len(pool)), seed))
    subsets = {(n, s): training_subset(pool, n, s) for *_, n, s in plan}
    return plan, subsets


def _write_resolved_config(path: Path, config: FewShotConfig, split: dict, subsets: dict):
    """The configuration with the fixed split and each run's training patients: what
    reproduces the experiment."""
    resolved = config.to_dict() | {
        "fixed_split": split,
        "subsets": {f"n{n}_seed{s}": names for (n, s), names in sorted(subsets.items())},
    }
    atomic_write_text(path, json.dumps(resolved, indent=2) + "\n")


def _run_event(event_class, plan: list[tuple], index: int, **extra):
    """A :class:`~.events.RunStarted` or :class:`~.events.RunDone` of the plan's run ``index``."""
    _, label, kind, value, n, seed = plan[index]
    return event_class(
        index=index,
        total=len(plan),
        model=label,
        budget_kind=kind,
        budget=value,
        n_train=n,
        seed=seed,
        **extra,
    )


def _tagged(progress, index: int):
    """``progress`` for one run's finetune events, each tagged with the run's index."""
    if progress is None:
        return None
    return lambda event: progress(
        dataclasses.replace(event, run=index) if hasattr(event, "run") else event
    )


def _finished(run_dir: Path, train_cases: list[Case], test_set: list[Case]) -> list[dict] | None:
    """The test rows of an earlier identical run (same training and test patients), if any."""
    metrics_file, split_file = run_dir / "test_metrics.csv", run_dir / "split.json"
    if not metrics_file.is_file() or not split_file.is_file():
        return None
    if json.loads(split_file.read_text()).get("train") != [c.name for c in train_cases]:
        return None
    rows = _read_rows(metrics_file)
    if sorted(r["case"] for r in rows) != sorted(c.name for c in test_set):
        return None
    per_budget = ("model", "seed", "budget_kind", "budget")
    return [{k: v for k, v in r.items() if k not in per_budget} for r in rows]


def _train_and_test(
    model, label, train_cases, val_set, test_set, seed, run_dir, config, progress, stop
) -> list[dict]:
    if config.resume:
        earlier = _finished(run_dir, train_cases, test_set)
        if earlier is not None:
            return earlier
    import torch

    overrides = dict(config.model_overrides.get(label, {}))
    train = dataclasses.replace(
        config.train, model=model, output_dir=str(run_dir), seed=seed, resume=False, **overrides
    )
    torch.manual_seed(seed)  # the seed also draws the initial weights of the head/network
    started = time.perf_counter()
    result = finetune(train_cases, train, val_cases=val_set, progress=progress, stop=stop)
    seconds = time.perf_counter() - started
    rows = evaluate_model(result.best_checkpoint, test_set, stop, train.device)
    rows = [
        {
            **row,
            "n_train": len(train_cases),
            "best_val_dice": result.best_val_dice,
            "train_seconds": seconds,
            "run_dir": str(run_dir),
        }
        for row in rows
    ]
    _write_rows(run_dir / "test_metrics.csv", [{"model": label, "seed": seed, **r} for r in rows])
    return rows
