"""A comparison of models over the same cases, as tables: accuracy (mean ± SD and a bootstrap
95% CI), cost (parameters, GFLOPs per slice, seconds per volume) and paired Wilcoxon tests.

:func:`compare` does the statistics (:mod:`napari_la_dinov2.scoring.stats` defines them);
:func:`markdown_report`, :func:`summary_rows` and :func:`write_report` lay them out. The
command line (``la-dinov2 evaluate``), the few-shot summary and the Table 1 recipe share them.

CSV files (written atomically):

- summary: one row per model: ``model``, ``n_cases``, then for each metric of
  :data:`~napari_la_dinov2.scoring.stats.STAT_METRICS` ``<metric>_mean``, ``_sd``, ``_median``,
  ``_ci_low``, ``_ci_high`` and ``_n_inf`` (Dice and IoU in %, distances in mm, volumes in mL),
  then ``parameters``, ``gflops_per_slice``, ``seconds_per_volume``, ``timing`` (empty when not
  asked for), and ``n_resamples``, ``confidence``, ``seed`` of the bootstrap;
- pairs: one row per metric and pair of models: ``metric``, ``model_a``, ``model_b``, ``n``,
  ``n_nonzero``, ``mean_diff``, ``median_diff`` (a - b, in the metric's unit as in the per-case
  table: Dice as a fraction), ``statistic``, ``p_value``, ``p_holm``, ``p_floor``, ``method``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import write_csv
from .stats import (
    CONFIDENCE,
    N_RESAMPLES,
    SEED,
    STAT_KEYS,
    STAT_METRICS,
    common_cases,
    describe,
    format_p,
    mean_sd_ci,
    metric_values,
    pairwise_wilcoxon,
)

COST_FIELDS = ("parameters", "gflops_per_slice", "seconds_per_volume", "timing")
PAIR_FIELDS = (
    "metric",
    "model_a",
    "model_b",
    "n",
    "n_nonzero",
    "mean_diff",
    "median_diff",
    "statistic",
    "p_value",
    "p_holm",
    "p_floor",
    "method",
)


@dataclass
class Comparison:
    """The statistics of several models over their common cases."""

    aligned: dict[str, list[dict]]  # model -> rows of the common cases, same order
    dropped: dict[str, str]  # case -> why it was left out
    summary: dict[str, dict[str, dict]]  # model -> metric -> stats.describe(...)
    pairs: list[dict]  # stats.pairwise_wilcoxon(...)
    costs: dict[str, dict] = field(default_factory=dict)  # model -> model_cost(...)
    n_resamples: int = N_RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = SEED

    @property
    def n_cases(self) -> int:
        return len(next(iter(self.aligned.values()), []))


def compare(
    results: Mapping[str, Sequence[Mapping]],
    *,
    costs: Mapping[str, Mapping] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Comparison:
    """``{model: per-case rows}`` (``case`` plus the metrics of ``evaluate_case``) -> the
    statistics over the cases every model has."""
    if not results:
        raise ValueError("no models to compare")
    aligned, dropped = common_cases(results)
    options = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    summary = {
        model: {key: describe(metric_values(rows, key), **options) for key in STAT_KEYS}
        for model, rows in aligned.items()
    }
    pairs = pairwise_wilcoxon(aligned) if len(aligned) > 1 and any(aligned.values()) else []
    return Comparison(
        aligned=aligned,
        dropped=dropped,
        summary=summary,
        pairs=pairs,
        costs=dict(costs or {}),
        **options,
    )


def case_means(rows: Sequence[Mapping]) -> list[dict]:
    """Rows of the same ``case`` (e.g. one per seed) -> one row per case (first-seen order)
    holding the mean of each metric of ``evaluate_case`` (``inf`` if any value is)."""
    keys = ("dice", "iou", "hd95_mm", "assd_mm", "volume_ml_pred", "volume_ml_truth")
    grouped: dict[str, list[Mapping]] = {}
    for row in rows:
        grouped.setdefault(str(row["case"]), []).append(row)
    return [
        {"case": case, **{k: float(sum(float(r[k]) for r in group)) / len(group) for k in keys}}
        for case, group in grouped.items()
    ]


def summary_rows(comparison: Comparison) -> list[dict]:
    """One flat row per model (the summary CSV, see the module docstring)."""
    table = []
    for model, metrics in comparison.summary.items():
        row: dict = {"model": model, "n_cases": comparison.n_cases}
        for key, _, scale, _ in STAT_METRICS:
            stats = metrics[key]
            for part in ("mean", "sd", "median", "ci_low", "ci_high"):
                row[f"{key}_{part}"] = stats[part] * scale
            row[f"{key}_n_inf"] = stats["n_inf"]
        cost = comparison.costs.get(model, {})
        row.update({name: cost.get(name, "") for name in COST_FIELDS})
        row.update(
            n_resamples=comparison.n_resamples,
            confidence=comparison.confidence,
            seed=comparison.seed,
        )
        table.append(row)
    return table


def _cell(text) -> str:
    # A model named "a|b" would add a column; a newline would end the row.
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def accuracy_table(comparison: Comparison, metrics=STAT_METRICS) -> list[str]:
    """Markdown lines: one row per model, ``mean ± SD [CI]`` per metric."""
    header = ["Model", "n", *(title for _, title, _, _ in metrics)]
    rows = [
        [model, str(comparison.n_cases)]
        + [mean_sd_ci(stats[key], scale, decimals) for key, _, scale, decimals in metrics]
        for model, stats in comparison.summary.items()
    ]
    return _table(header, rows)


def _number(value, fmt: str) -> str:
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, fmt)


def cost_table(comparison: Comparison) -> list[str]:
    rows = [
        [
            model,
            _number(cost.get("parameters", "") and cost["parameters"] / 1e6, ".2f"),
            _number(cost.get("gflops_per_slice"), ".2f"),
            _number(cost.get("seconds_per_volume"), ".2f"),
            cost.get("timing") or "–",
        ]
        for model, cost in comparison.costs.items()
    ]
    return _table(["Model", "Parameters (M)", "GFLOPs / slice", "s / volume", "Timing"], rows)


def wilcoxon_table(comparison: Comparison, metrics=STAT_METRICS) -> list[str]:
    """Markdown lines: one row per pair of models, p (Holm-adjusted p) per metric."""
    by_pair: dict[tuple[str, str], dict[str, dict]] = {}
    for row in comparison.pairs:
        by_pair.setdefault((row["model_a"], row["model_b"]), {})[row["metric"]] = row
    keys = [key for key, *_ in metrics]
    header = ["Model A", "Model B", "n", *(f"{title} p (Holm)" for _, title, _, _ in metrics)]
    rows = []
    for (a, b), tests in by_pair.items():
        cells = [f"{format_p(tests[k]['p_value'])} ({format_p(tests[k]['p_holm'])})" for k in keys]
        rows.append([a, b, str(tests[keys[0]]["n"]), *cells])
    return _table(header, rows)


def _notes(comparison: Comparison) -> list[str]:
    level = f"{comparison.confidence * 100:g}%"
    notes = [
        f"Cases: {comparison.n_cases} common to all models"
        + (
            f"; {len(comparison.dropped)} dropped: "
            + "; ".join(f"{case} ({why})" for case, why in comparison.dropped.items())
            if comparison.dropped
            else ""
        )
        + ".",
        f"Cells: mean ± SD over cases [{level} CI: percentile bootstrap of the mean over cases, "
        f"{comparison.n_resamples} resamples, seed {comparison.seed}]. Volume error = predicted "
        "- reference LA volume (mL).",
    ]
    if comparison.pairs:
        floor = min(row["p_floor"] for row in comparison.pairs)
        notes.append(
            "p: two-sided paired Wilcoxon signed-rank test over the same cases (zero "
            "differences dropped; exact for up to 50 non-zero differences, ties included, else "
            f"normal approximation); Holm: adjusted over the model pairs of each metric. With "
            f"{comparison.n_cases} cases the smallest possible p is {floor:.3g}."
        )
    return notes


def markdown_report(comparison: Comparison, title: str | None = None) -> str:
    """The whole comparison as markdown: accuracy, cost (if any), tests (if two models or
    more), and how the figures were computed."""
    lines = [f"## {title}", ""] if title else []
    lines += ["### Accuracy", "", *accuracy_table(comparison), ""]
    if comparison.costs:
        lines += ["### Cost", "", *cost_table(comparison), ""]
    if comparison.pairs:
        lines += ["### Paired tests", "", *wilcoxon_table(comparison), ""]
    lines += [f"- {note}" for note in _notes(comparison)]
    return "\n".join(lines) + "\n"


def cases_rows(comparison: Comparison) -> list[dict]:
    """Per-case rows of every model (``model`` first), with the signed volume error."""
    return [
        {
            "model": model,
            **row,
            "volume_error_ml": float(row["volume_ml_pred"]) - float(row["volume_ml_truth"]),
        }
        for model, rows in comparison.aligned.items()
        for row in rows
    ]


def write_report(
    comparison: Comparison,
    *,
    markdown: str | os.PathLike | None = None,
    summary_csv: str | os.PathLike | None = None,
    pairs_csv: str | os.PathLike | None = None,
    cases_csv: str | os.PathLike | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write the asked-for files (each atomically); returns their paths."""
    from ..volume_files import atomic_write

    written = []
    if markdown:
        text = markdown_report(comparison, title)
        atomic_write(Path(markdown), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        written.append(Path(markdown))
    if summary_csv:
        written.append(write_csv(summary_csv, summary_rows(comparison)))
    if pairs_csv:
        written.append(write_csv(pairs_csv, comparison.pairs, PAIR_FIELDS))
    if cases_csv:
        written.append(write_csv(cases_csv, cases_rows(comparison)))
    return written
