"""Statistics for comparing segmentation models over the same cases.

Definitions (the README's evaluate section repeats them):

- **Cases**: models are compared over the cases every model has a row for
  (:func:`common_cases`); any other case is dropped, with the reason.
- **Mean ± SD**: the mean over cases and the sample standard deviation (ddof = 1; 0 for one case).
- **95% CI**: percentile bootstrap of the mean over cases: ``n_resamples`` (default 10,000)
  resamples of the cases with replacement, drawn by ``numpy.random.default_rng(seed)`` (default
  seed 0, so a report is reproducible), the 2.5th and 97.5th percentiles of their means
  (``scipy.stats.bootstrap(method='percentile')``). With one case, or an infinite value (a
  distance to an empty mask), the interval is not computed (NaN). With few cases (under about
  20) a percentile interval is somewhat too narrow: it is approximate there.
- **Paired Wilcoxon signed-rank test** between two models, on the per-case differences
  (``scipy.stats.wilcoxon``, two-sided). Zero differences are dropped (Wilcoxon's original
  ``zero_method='wilcox'``); ``n_nonzero`` says how many remained. The p-value is exact (the
  permutation distribution of the signed ranks: scipy's exact method, or, when some differences
  have the same size, :func:`signed_rank_exact_p` over the tied average ranks) when at most 50
  differences remain; otherwise scipy's normal approximation with the tie correction. A
  difference between two infinite distances (both models missed the atrium) counts as zero;
  differences are rounded to 12 decimals first, so that float noise makes no false ties/zeros.
  With n non-zero differences the smallest possible exact two-sided p-value is 2 / 2^n
  (``p_floor``): with 5 cases or fewer no difference can reach p < 0.05. ``p_holm``: the
  p-values of one metric adjusted for the number of model pairs (Holm's step-down method).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

# (key, header, scale, decimals): the metrics compared, as reported (Dice and IoU in %).
STAT_METRICS = (
    ("dice", "Dice (%)", 100.0, 1),
    ("iou", "IoU (%)", 100.0, 1),
    ("hd95_mm", "HD95 (mm)", 1.0, 2),
    ("assd_mm", "ASSD (mm)", 1.0, 2),
    ("volume_error_ml", "Volume error (mL)", 1.0, 1),
    ("abs_volume_error_ml", "Abs. volume error (mL)", 1.0, 1),
)
STAT_KEYS = tuple(key for key, *_ in STAT_METRICS)
N_RESAMPLES, CONFIDENCE, SEED = 10_000, 0.95, 0
MAX_EXACT = 50  # non-zero differences up to which the Wilcoxon p-value is exact


def metric_values(rows: Sequence[Mapping], key: str) -> np.ndarray:
    """Per-case values of ``key`` (float). ``volume_error_ml`` = predicted - reference volume
    (signed: positive when the model over-segments), ``abs_volume_error_ml`` its size; both are
    derived from ``volume_ml_pred`` and ``volume_ml_truth`` when a row lacks them."""
    if key in ("volume_error_ml", "abs_volume_error_ml"):
        signed = np.asarray(
            [
                float(row["volume_error_ml"])
                if "volume_error_ml" in row
                else float(row["volume_ml_pred"]) - float(row["volume_ml_truth"])
                for row in rows
            ],
            dtype=float,
        )
        return np.abs(signed) if key == "abs_volume_error_ml" else signed
    return np.asarray([float(row[key]) for row in rows], dtype=float)


def bootstrap_ci(
    values, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (see the module docstring);
    ``(nan, nan)`` for fewer than two values or any non-finite one."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.size < 2 or not np.isfinite(values).all():
        return math.nan, math.nan
    if np.all(values == values[0]):  # every resample has the same mean
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=int(n_resamples),
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def describe(values, **bootstrap_kwargs) -> dict[str, float]:
    """``n``, ``n_inf`` (infinite values: the mean is then inf), ``mean``, ``sd`` (ddof = 1),
    ``median``, ``ci_low``, ``ci_high`` (:func:`bootstrap_ci`)."""
    values = np.asarray(values, dtype=float)
    n_inf = int(np.isinf(values).sum())
    if values.size == 0:
        mean = sd = median = math.nan
    elif n_inf:
        mean, sd, median = math.inf, math.nan, float(np.median(values))
    else:
        mean, median = float(values.mean()), float(np.median(values))
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    low, high = bootstrap_ci(values, **bootstrap_kwargs)
    return dict(
        n=int(values.size), n_inf=n_inf, mean=mean, sd=sd, median=median, ci_low=low, ci_high=high
    )


def common_cases(
    results: Mapping[str, Sequence[Mapping]],
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """``{model: rows}`` -> (the rows of the cases every model has, in the same case order for
    each model; ``{dropped case: why}``). A model with two rows of one case is an error."""
    by_model: dict[str, dict[str, dict]] = {}
    for model, rows in results.items():
        cases = [str(row["case"]) for row in rows]
        if len(set(cases)) != len(cases):
            twice = next(c for c in cases if cases.count(c) > 1)
            raise ValueError(f"model {model!r} has two rows for case {twice!r}")
        by_model[model] = {str(row["case"]): dict(row) for row in rows}
    every = sorted(set().union(*(set(rows) for rows in by_model.values()))) if by_model else []
    common = [c for c in every if all(c in rows for rows in by_model.values())]
    dropped = {
        case: "no result from " + ", ".join(m for m, rows in by_model.items() if case not in rows)
        for case in every
        if case not in common
    }
    return {m: [rows[c] for c in common] for m, rows in by_model.items()}, dropped


def _differences(x, y) -> np.ndarray:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    same_inf = np.isinf(x) & np.isinf(y) & (np.sign(x) == np.sign(y))
    with np.errstate(invalid="ignore"):  # rounded: equal sizes tie, float noise aside
        return np.where(same_inf, 0.0, np.round(x - y, 12))


def wilcoxon_paired(x, y) -> dict[str, float | int | str]:
    """Two-sided paired Wilcoxon signed-rank test of ``x`` against ``y`` (same cases, same
    order); see the module docstring for zeros, ties, exactness and ``p_floor``. Returns ``n``,
    ``n_nonzero``, ``mean_diff`` and ``median_diff`` (x - y), ``statistic``, ``p_value``,
    ``p_floor`` and ``method`` ('exact', 'approx', or 'none' when no difference is non-zero:
    then p = 1)."""
    from scipy.stats import wilcoxon

    diff = _differences(x, y)
    nonzero = diff[diff != 0]
    row = dict(
        n=int(diff.size),
        n_nonzero=int(nonzero.size),
        mean_diff=float(diff.mean()) if diff.size else math.nan,
        median_diff=float(np.median(diff)) if diff.size else math.nan,
    )
    if nonzero.size == 0:
        return {**row, "statistic": math.nan, "p_value": 1.0, "p_floor": 1.0, "method": "none"}
    sizes = np.abs(nonzero)
    tied = np.unique(sizes).size < sizes.size
    if nonzero.size > MAX_EXACT:
        method = "approx"
    else:
        method = "exact, ties" if tied else "exact"
    result = wilcoxon(
        nonzero,
        zero_method="wilcox",
        alternative="two-sided",
        method="approx" if method == "approx" else "exact",
    )
    p_value = float(result.pvalue)
    if method == "exact, ties":  # scipy's exact table assumes distinct ranks
        p_value = signed_rank_exact_p(nonzero)
    floor = min(1.0, 2.0 / 2.0**nonzero.size)
    return {
        **row,
        "statistic": float(result.statistic),
        "p_value": p_value,
        "p_floor": floor,
        "method": method,
    }


def signed_rank_exact_p(differences) -> float:
    """Exact two-sided p-value of the signed-rank statistic given the observed ranks (average
    ranks for tied sizes): every one of the 2^n sign patterns is equally likely under the null,
    and the sums of positive ranks are counted by dynamic programming over the doubled
    (integer) ranks. ``2 min(P(T <= t), P(T >= t))``, capped at 1, as scipy's exact method."""
    from scipy.stats import rankdata

    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    ranks2 = np.rint(2 * rankdata(np.abs(d))).astype(int)  # average ranks are halves
    counts = np.zeros(int(ranks2.sum()) + 1, dtype=float)  # counts of each doubled sum
    counts[0] = 1.0
    for r in ranks2:
        counts[r:] = counts[r:] + counts[:-r]
    observed = int(ranks2[d > 0].sum())
    total = counts.sum()
    below, above = counts[: observed + 1].sum() / total, counts[observed:].sum() / total
    return float(min(1.0, 2.0 * min(below, above)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def pairwise_wilcoxon(
    aligned: Mapping[str, Sequence[Mapping]], metrics: Sequence[str] = STAT_KEYS
) -> list[dict]:
    """Every pair of models (in the given order) on every metric: one row each with
    ``metric``, ``model_a``, ``model_b`` and :func:`wilcoxon_paired` of a against b, plus
    ``p_holm`` (adjusted over the pairs of that metric). ``aligned``: rows of the same cases in
    the same order for each model, as :func:`common_cases` gives them."""
    pairs = list(itertools.combinations(list(aligned), 2))
    table = []
    for key in metrics:
        rows = [
            dict(
                metric=key,
                model_a=a,
                model_b=b,
                **wilcoxon_paired(metric_values(aligned[a], key), metric_values(aligned[b], key)),
            )
            for a, b in pairs
        ]
        for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
            row["p_holm"] = adjusted
        table.extend(rows)
    return table


def format_p(p: float) -> str:
    """A p-value for a table: 3 significant digits, ``<1e-4`` below that."""
    if math.isnan(p):
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def mean_sd_ci(stats: Mapping[str, float], scale: float = 1.0, decimals: int = 1) -> str:
    """``mean ± SD [low, high]`` (the CI left out when it was not computed)."""
    if math.isnan(stats["mean"]):
        return "–"
    if math.isinf(stats["mean"]):
        return f"inf ({stats['n_inf']} with one mask empty)"
    text = f"{stats['mean'] * scale:.{decimals}f} ± {stats['sd'] * scale:.{decimals}f}"
    if not math.isnan(stats["ci_low"]):
        text += (
            f" [{stats['ci_low'] * scale:.{decimals}f}, {stats['ci_high'] * scale:.{decimals}f}]"
        )
    return text
