"""Data-level few-shot: seeded, nested subsets that never touch the test cases; a tiny run writes
the CSV, the summary and the Fig. 2 plot, and a second call reuses the finished runs."""

from __future__ import annotations

import csv

import pytest

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.training import Case, TrainConfig
from napari_la_dinov2.training.estimate import format_duration, planned_runs
from napari_la_dinov2.training.events import EpochDone, RunDone, RunStarted, StepDone
from napari_la_dinov2.training.fewshot import (
    FewShotConfig,
    budget_size,
    fixed_split,
    plot_fewshot,
    run_fewshot,
    training_subset,
)
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case


def test_subsets_are_seeded_nested_and_disjoint_from_test():
    names = [f"case{i:02d}" for i in range(40)]
    config = FewShotConfig(split_seed=3)
    split = fixed_split(names, config)
    assert fixed_split(list(reversed(names)), config) == split  # order of input is irrelevant
    held_out = set(split["test"]) | set(split["val"])
    assert len(split["test"]) == 8 and len(split["val"]) == 4 and len(split["train"]) == 28
    assert not held_out & set(split["train"])
    pool = split["train"]
    for seed in (0, 1, 2):
        previous: set[str] = set()
        for n in (1, 4, 10, 28):
            subset = training_subset(pool, n, seed)
            assert len(subset) == n == len(set(subset))
            assert previous <= set(subset)  # nested: a larger budget keeps the smaller one
            assert not set(subset) & held_out
            assert subset == training_subset(list(reversed(pool)), n, seed)  # seeded
            previous = set(subset)
    assert training_subset(pool, 10, 0) != training_subset(pool, 10, 1)
    # A fixed test set given by name is honoured and never trained on.
    fixed = fixed_split(names, FewShotConfig(test_cases=["case00", "case01"]))
    assert fixed["test"] == ["case00", "case01"] and "case00" not in fixed["train"]
    with pytest.raises(InputError, match="not found"):
        fixed_split(names, FewShotConfig(test_cases=["nope"]))


def test_budget_sizes():
    assert budget_size("patients", "all", 56) == 56
    assert budget_size("patients", 10, 56) == 10
    assert budget_size("patients", 100, 56) == 56
    assert budget_size("fraction", 0.01, 56) == 1  # never below one patient
    assert budget_size("fraction", 0.25, 56) == 14
    assert budget_size("fraction", 1.0, 56) == 56
    with pytest.raises(InputError):
        FewShotConfig(fractions=[1.5]).budgets()
    with pytest.raises(InputError):
        FewShotConfig(patients=[0]).budgets()


def _cases(count: int) -> list[Case]:
    shape = (32, 28, 5)
    cases = []
    for i in range(count):
        image, mask = synthetic_case(shape, seed=i)
        cases.append(Case(f"p{i}", image, mask, VolumeMeta.from_spacing(shape)))
    return cases


def test_tiny_fewshot_run_writes_csv_summary_and_plot(tmp_path):
    cases = _cases(6)
    train = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, lr=1e-3, device="cpu")
    config = FewShotConfig(
        models=["unet"],
        patients=[1, "all"],
        fractions=[1.0],  # the same 3 patients as 'all': one shared training run
        seeds=[0, 1],
        split=(0.5, 0.17, 0.33),
        output_dir=str(tmp_path / "fs"),
        train=train,
        model_overrides={
            "unet": {"model_kwargs": TINY_UNET_KWARGS, "preprocessing": TINY_UNET_PREPROCESSING}
        },
    )
    events = []
    rows = run_fewshot(cases, config, progress=events.append)
    runs = [e for e in events if isinstance(e, RunStarted)]
    assert [e.index for e in runs] == list(range(6)) and runs[0].total == 6
    assert [e.n_train for e in runs] == [1, 1, 3, 3, 3, 3]
    trainings = [e for e in events if isinstance(e, EpochDone)]
    assert [e.run for e in trainings] == [0, 1, 2, 3]  # 100% reused the 'all' runs
    # Each run's end, with its mean test Dice, as it ends (a live plot draws it).
    done = [e for e in events if isinstance(e, RunDone)]
    assert [e.index for e in done] == list(range(6)) and [e.n_train for e in done] == [
        1,
        1,
        3,
        3,
        3,
        3,
    ]
    assert events.index(done[0]) < events.index(runs[1])

    out = tmp_path / "fs"
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) == 3 * 2 * 2  # budgets x seeds x test cases
    test_names = {r["case"] for r in table}
    assert len(test_names) == 2
    trained = set()
    for run_dir in (out / "runs" / "unet").iterdir():
        trained |= set((run_dir / "split.json").read_text(encoding="utf-8").split('"')[1::2]) - {
            "train",
            "val",
        }
    assert not trained & test_names  # no run ever saw a test case
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in table)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| unet | 1 patients | 1 | 2 |" in summary and "| unet | 100% | 3 | 2 |" in summary
    png = (out / "fewshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # Again: every run is found on disk; nothing trains, the same rows come back.
    events.clear()
    again = run_fewshot(cases, config, progress=events.append)
    assert not [e for e in events if isinstance(e, StepDone)]
    assert [r["dice"] for r in again] == pytest.approx([r["dice"] for r in rows])


def test_stop_before_the_first_run_returns_nothing(tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    config = FewShotConfig(output_dir=str(tmp_path / "fs"), seeds=[0], patients=[1])
    assert run_fewshot(_cases(4), config, stop=stop) == []
    assert not (tmp_path / "fs" / "results.csv").exists()


def test_planned_runs_count_shared_budgets_once():
    config = FewShotConfig(models=["unet", "x/y"], patients=[1, 10, "all"], seeds=[0, 1])
    names = [f"case{i}" for i in range(10)]  # a training pool of 7: 10 and 'all' are one run
    runs = planned_runs(config, names)
    assert len(runs) == 2 * 2 * 2 and ("unet", 7, 1) in runs
    assert format_duration(30) == "30 s" and format_duration(600) == "10 min"
    assert format_duration(3 * 3600 + 20 * 60) == "3 h 20 min"


def test_a_one_point_curve_keeps_its_dot_off_the_axes(tmp_path):
    rows = [
        dict(
            model="unet",
            budget_kind="patients",
            budget=1,
            n_train=1,
            seed=0,
            case="a",
            dice=0.0,
            iou=0.0,
        )
    ]
    axes = plot_fewshot(rows, tmp_path / "one.png").axes[0]
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()
    assert x0 < 1 / 1.5 and x1 > 1.5 and y0 < -0.01 and y1 > 1
