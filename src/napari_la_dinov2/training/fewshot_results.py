"""Few-shot results: the rows of every run grouped by seed, the summary table with its
confidence intervals and paired tests (``summary.md``), and the Dice-against-data plot
(``fewshot.png``). :mod:`.fewshot` runs the experiment; this module reads its rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..volume_files import atomic_write
from .state import atomic_write_text

DICE_LIMITS = (-0.05, 1.05)  # the y range of the Dice plots


RUN_KEY = ("model", "budget_kind", "budget", "n_train")


def rows_by_seed(rows: list[dict], key=RUN_KEY) -> dict[tuple, dict[int, list[dict]]]:
    """The one grouping of few-shot rows: (the ``key`` fields' values) -> {seed: rows}, in
    the order first seen."""
    runs: dict[tuple, dict[int, list[dict]]] = {}
    for row in rows:
        group = runs.setdefault(tuple(row[field] for field in key), {})
        group.setdefault(row["seed"], []).append(row)
    return runs


def _per_run(rows: list[dict]) -> dict[tuple, dict[int, float]]:
    """(model, budget kind, budget, n_train) -> {seed: mean Dice over the test cases}."""
    return {
        key: {
            seed: float(np.mean([float(r["dice"]) for r in found])) for seed, found in seeds.items()
        }
        for key, seeds in rows_by_seed(rows).items()
    }


def write_summary(path: Path, rows: list[dict]) -> None:
    """Markdown: per model and budget, Dice and IoU (%) as mean ± SD over seeds of the per-run
    mean over the test cases, and a 95% CI of the mean Dice: percentile bootstrap over the test
    cases (:func:`~napari_la_dinov2.scoring.stats.bootstrap_ci`) of each case's Dice averaged over the
    seeds (the cases are the sample a user's next patients come from; 3 seeds are too few to
    resample). Then, at each budget run by two models or more, paired Wilcoxon tests between
    them over the same test cases (each case averaged over the seeds)."""
    from ..scoring.report import case_means, compare, wilcoxon_table
    from ..scoring.stats import STAT_METRICS, bootstrap_ci, metric_values

    runs: dict[tuple, dict[str, dict[int, list[dict]]]] = {}
    for (kind, value, model), seeds in rows_by_seed(
        rows, ("budget_kind", "budget", "model")
    ).items():
        runs.setdefault((kind, value), {})[model] = seeds
    lines = [
        "| Model | Budget | Training patients | Seeds | Dice (%) | Dice 95% CI | IoU (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    tests = []
    for (kind, value), models in runs.items():
        budget = f"{value} patients" if kind == "patients" else f"{float(value) * 100:g}%"
        averaged = {}
        for model, seeds in models.items():
            run_rows = [r for seed_rows in seeds.values() for r in seed_rows]
            dices, ious = (
                np.array([np.mean(metric_values(s, key)) for s in seeds.values()]) * 100
                for key in ("dice", "iou")
            )
            averaged[model] = case_means(run_rows)
            low, high = bootstrap_ci(metric_values(averaged[model], "dice") * 100)
            ci = "–" if np.isnan(low) else f"{low:.1f} to {high:.1f}"
            n = run_rows[0]["n_train"]
            lines.append(
                f"| {model} | {budget} | {n} | {len(seeds)} | {_mean_sd(dices)} | {ci} "
                f"| {_mean_sd(ious)} |"
            )
        if len(averaged) > 1:
            table = wilcoxon_table(compare(averaged, n_resamples=100), STAT_METRICS[:2])
            tests += [f"\n{budget}:\n", *table]
    n_test = len({row["case"] for row in rows})
    lines.append(
        f"\nTest cases: {n_test}; SD over seeds (0 with one seed); CI: percentile "
        "bootstrap over the test cases (10,000 resamples, seed 0)."
    )
    if tests:
        lines += [
            "\n### Paired Wilcoxon tests between models (per test case, mean over seeds)",
            *tests,
        ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _mean_sd(values: np.ndarray) -> str:
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return f"{float(values.mean()):.1f} ± {sd:.1f}"


def plot_fewshot(rows: list[dict], path: Path):
    """The paper's Fig. 2: test Dice against data size, one line per model, mean over seeds
    with a +-SD band. One panel per budget kind (patients, fraction). Returns the Figure."""
    from matplotlib.figure import Figure

    runs = _per_run(rows)
    kinds = [k for k in ("patients", "fraction") if any(key[1] == k for key in runs)]
    figure = Figure(figsize=(5.2 * len(kinds), 3.8), dpi=110)
    axes_list = figure.subplots(1, len(kinds), squeeze=False)[0]
    models = list(dict.fromkeys(row["model"] for row in rows))
    for axes, kind in zip(axes_list, kinds):
        for colour, model in enumerate(models):
            points = sorted(
                (key[3] if kind == "patients" else float(key[2]), np.array(list(s.values())))
                for key, s in runs.items()
                if key[0] == model and key[1] == kind
            )
            if not points:
                continue
            xs = np.array([p[0] for p in points], float)
            mean = np.array([p[1].mean() for p in points])
            sd = np.array([p[1].std(ddof=1) if p[1].size > 1 else 0.0 for p in points])
            axes.plot(xs, mean, marker="o", ms=4, color=f"C{colour}", label=model)
            axes.fill_between(xs, mean - sd, mean + sd, color=f"C{colour}", alpha=0.2, lw=0)
        if kind == "patients":
            axes.set(xlabel="training patients", xscale="log")
        else:
            axes.set(xlabel="fraction of the training patients", xscale="log")
        # Ticks at the budgets themselves, in plain numbers (a log axis with few points would
        # otherwise label them like 2x10^0).
        budgets = sorted(
            {key[3] if kind == "patients" else float(key[2]) for key in runs if key[1] == kind}
        )
        axes.set_xticks(budgets, [f"{b:g}" for b in budgets])
        axes.minorticks_off()
        # A little room below 0 and beside a single budget: a dot is never on the axis line.
        if len(budgets) == 1:
            axes.set_xlim(budgets[0] / 2, budgets[0] * 2)
        axes.set(ylabel="test Dice", ylim=DICE_LIMITS, title=f"Dice vs {kind}")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return figure
