"""Statistics of model comparison against answers known in closed form: masks built so that
Dice is exact, Wilcoxon p-values of configurations whose null distribution is counted by hand,
the bootstrap CI of a known spread; and the cost of a model (parameters, FLOPs by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from napari_la_dinov2.scoring.metrics import evaluate_case
from napari_la_dinov2.scoring.report import compare, markdown_report, summary_rows
from napari_la_dinov2.scoring.stats import (
    bootstrap_ci,
    common_cases,
    describe,
    holm,
    metric_values,
    signed_rank_exact_p,
    wilcoxon_paired,
)

SPACING = (1.0, 1.0, 2.0)


def _masks(truth_voxels: int, found: int, shape=(100, 4, 2)) -> tuple[np.ndarray, np.ndarray]:
    """A reference of ``truth_voxels`` voxels and a prediction covering ``found`` of them:
    Dice = 2 found / (truth_voxels + found) exactly."""
    truth, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    truth.reshape(-1)[:truth_voxels] = 1
    pred.reshape(-1)[:found] = 1
    return pred, truth


def _constructed(n_cases: int = 10) -> dict[str, list[dict]]:
    """Model A finds 90 - i of 90 voxels in case i (Dice 2(90-i)/(180-i): all different);
    model B finds 60 of 90 in every case (Dice 0.8). Every A - B difference is positive."""
    results: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(n_cases):
        for model, found in (("A", 90 - i), ("B", 60)):
            pred, truth = _masks(90, found)
            results[model].append({"case": f"c{i:02d}", **evaluate_case(pred, truth, SPACING)})
    return results


def test_constructed_dice_is_exact():
    results = _constructed()
    assert [r["dice"] for r in results["B"]] == [pytest.approx(0.8, abs=1e-12)] * 10
    expected = [2 * (90 - i) / (180 - i) for i in range(10)]
    assert [r["dice"] for r in results["A"]] == pytest.approx(expected, abs=1e-12)
    # 90 voxels of 2 mm^3 = 0.18 mL; B misses 30 voxels: -0.06 mL
    assert metric_values(results["B"], "volume_error_ml") == pytest.approx([-0.06] * 10)
    assert metric_values(results["B"], "abs_volume_error_ml") == pytest.approx([0.06] * 10)


def test_wilcoxon_all_differences_positive_is_exactly_two_over_two_to_the_n():
    comparison = compare(_constructed(10), n_resamples=2000)
    (dice,) = [row for row in comparison.pairs if row["metric"] == "dice"]
    assert dice["n"] == dice["n_nonzero"] == 10 and dice["method"] == "exact"
    assert dice["p_value"] == 2 / 2**10 == dice["p_floor"]
    a, b = (metric_values(comparison.aligned[m], "dice") for m in ("A", "B"))
    assert dice["p_value"] == scipy.stats.wilcoxon(a, b, method="exact").pvalue
    assert dice["statistic"] == 0.0  # no negative difference
    assert dice["p_holm"] == dice["p_value"]  # one pair: nothing to adjust


def test_wilcoxon_equal_differences_and_zeros():
    # All ten differences equal (every rank tied) and positive: still only the all-plus and
    # all-minus sign patterns are as extreme, p = 2/2^10.
    equal = wilcoxon_paired(np.full(10, 0.9), np.full(10, 0.7))
    assert equal["method"] == "exact, ties" and equal["p_value"] == 2 / 2**10
    # Zero differences are dropped (Wilcoxon's method): 3 zeros + 7 positives -> p = 2/2^7.
    x = np.r_[np.full(3, 0.5), np.linspace(0.6, 0.9, 7)]
    zeros = wilcoxon_paired(x, np.full(10, 0.5))
    assert zeros["n"] == 10 and zeros["n_nonzero"] == 7 and zeros["p_value"] == 2 / 2**7
    # Nothing differs: no evidence, p = 1.
    assert wilcoxon_paired(x, x)["p_value"] == 1.0
    # Both models missed the atrium in a case (inf - inf): a zero difference, not a NaN.
    inf = wilcoxon_paired([math.inf, 2.0, 3.0, 4.0], [math.inf, 1.0, 1.0, 1.0])
    assert inf["n_nonzero"] == 3 and inf["p_value"] == 2 / 2**3


def test_exact_p_with_ties_is_the_permutation_p():
    # Tied sizes: the exact p counts all 2^8 sign patterns of the average ranks, which scipy's
    # permutation method enumerates too.
    d = np.array([0.1, 0.1, 0.2, -0.05, 0.3, 0.3, 0.4, -0.5])
    permutation = scipy.stats.wilcoxon(d, method=scipy.stats.PermutationMethod(n_resamples=256))
    assert signed_rank_exact_p(d) == pytest.approx(permutation.pvalue, abs=1e-12)
    # Without ties it is scipy's exact p.
    d = np.array([1.0, 2, 3, 4, 5, -6, 7, 8])
    assert signed_rank_exact_p(d) == pytest.approx(scipy.stats.wilcoxon(d).pvalue, abs=1e-12)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (kept non-decreasing)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_bootstrap_ci_contains_the_mean_narrows_with_cases_and_converges_with_resamples():
    rng = np.random.default_rng(1)
    values = rng.normal(0.85, 0.05, 20)
    low, high = bootstrap_ci(values, n_resamples=5000, seed=0)
    assert low < values.mean() < high
    assert bootstrap_ci(values, n_resamples=5000, seed=0) == (low, high)  # seeded
    # Large-sample check: close to mean +- 1.96 SE.
    se = values.std(ddof=0) / math.sqrt(values.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    # More cases of the same spread: a narrower interval (about 1/sqrt(4) as wide).
    more = np.concatenate([values + rng.normal(0, 1e-3, 20) for _ in range(4)])
    low4, high4 = bootstrap_ci(more, n_resamples=5000, seed=0)
    assert (high4 - low4) < 0.6 * (high - low)

    # More resamples: the Monte Carlo scatter of the limits (over seeds) shrinks.
    def scatter(resamples):
        return np.std([bootstrap_ci(values, n_resamples=resamples, seed=s)[0] for s in range(8)])

    assert scatter(20_000) < scatter(200)
    # Degenerate inputs.
    assert all(math.isnan(v) for v in bootstrap_ci([0.9]))
    assert bootstrap_ci([0.9, 0.9, 0.9]) == (0.9, 0.9)
    stats = describe([1.0, math.inf, 2.0])
    assert stats["mean"] == math.inf and stats["n_inf"] == 1 and math.isnan(stats["ci_low"])


def test_common_cases_name_the_dropped_ones():
    results = _constructed(4)
    results["B"] = results["B"][1:]  # B has no c00
    results["C"] = [dict(r) for r in results["A"][:3]]  # C has no c03
    aligned, dropped = common_cases(results)
    assert [r["case"] for r in aligned["A"]] == ["c01", "c02"] == [r["case"] for r in aligned["C"]]
    assert dropped == {"c00": "no result from B", "c03": "no result from C"}
    comparison = compare(results, n_resamples=500)
    assert comparison.n_cases == 2 and len(comparison.pairs) == 3 * 6  # 3 pairs x 6 metrics
    report = markdown_report(comparison)
    assert (
        "2 common to all models; 2 dropped: c00 (no result from B); c03 (no result from C)"
        in report
    )
    with pytest.raises(ValueError, match="two rows for case 'c01'"):
        common_cases({"A": results["A"] + results["A"][1:2]})


def test_summary_row_in_percent_with_ci():
    comparison = compare(_constructed(10), n_resamples=1000)
    row_b = summary_rows(comparison)[1]
    assert row_b["model"] == "B" and row_b["n_cases"] == 10
    assert row_b["dice_mean"] == pytest.approx(80.0) and row_b["dice_sd"] == pytest.approx(0.0)
    assert row_b["dice_ci_low"] == pytest.approx(80.0) == row_b["dice_ci_high"]
    row_a = summary_rows(comparison)[0]
    assert row_a["dice_ci_low"] < row_a["dice_mean"] < row_a["dice_ci_high"]
    assert "| B | 10 | 80.0 ± 0.0 [80.0, 80.0] |" in markdown_report(comparison)


def test_model_cost_counts_parameters_and_flops_by_hand(tiny_dinov2):
    import torch

    from napari_la_dinov2.scoring.model_cost import count_flops, count_parameters, forward_flops

    assert count_parameters(tiny_dinov2) == sum(p.numel() for p in tiny_dinov2.parameters())
    # The backbone alone, by hand: patch embedding conv 2*64*3*14*14 per patch (64 patches),
    # per layer the q, k, v, o projections and the MLP, 64 -> 256 -> 64 (DINOv2's mlp_ratio 4):
    # 2*tokens*(4*64*64 + 2*64*256), and the attention itself, QK^T and AV
    # (2 * 2*tokens*tokens*64), on 65 tokens (64 patches + CLS), 2 layers.
    tokens, width = 65, 64
    by_hand = 2 * 64 * 3 * 14 * 14 * 64 + 2 * (
        2 * tokens * (4 * width * width + 2 * width * 4 * width) + 2 * 2 * tokens * tokens * width
    )
    backbone = tiny_dinov2.net.backbone
    assert forward_flops(lambda x: backbone(pixel_values=x), torch.zeros(1, 3, 112, 112)) == by_hand
    assert count_flops(tiny_dinov2) > by_hand  # plus the head and decoder


def test_model_cost_of_a_multi_view_model_sums_its_branches():
    from napari_la_dinov2.models import build_model
    from napari_la_dinov2.scoring.model_cost import count_flops

    kwargs = dict(channels=(4, 8), strides=(2,), num_res_units=0)
    one = build_model("unet", preprocessing=dict(input_size=32), **kwargs)
    three = build_model(
        "unet_ensemble",
        preprocessing=dict(input_size=32, views=["through-plane", "in-plane-1", "in-plane-2"]),
        members=3,
        **kwargs,
    )
    assert count_flops(three) == 3 * count_flops(one) > 0


def test_fewshot_summary_has_the_ci_over_cases_and_the_paired_tests(tmp_path):
    from napari_la_dinov2.training.fewshot import write_summary

    rows = []
    for seed in (0, 1):
        for model, results in _constructed(10).items():
            rows += [
                {
                    "model": model,
                    "budget_kind": "patients",
                    "budget": 4,
                    "n_train": 4,
                    "seed": seed,
                    **row,
                }
                for row in results
            ]
    write_summary(tmp_path / "summary.md", rows)
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| B | 4 patients | 4 | 2 | 80.0 ± 0.0 | 80.0 to 80.0 | 66.7 ± 0.0 |" in text
    a_dice = np.mean([2 * (90 - i) / (180 - i) for i in range(10)]) * 100
    assert f"| A | 4 patients | 4 | 2 | {a_dice:.1f} ± 0.0 |" in text
    # per case, averaged over the two seeds, every A - B difference is positive: p = 2/2^10
    assert "| A | B | 10 | 0.00195 (0.00195) |" in text
