"""Correction by clicks, measured: the CVPR 2025 interactive protocol on LA 2018 patients.

For each of the default model's test patients (never seen by it nor by the click model): the
automatic mask (the embedded default), then ``--clicks`` simulated clicks, each at the point
deepest inside the largest connected error region (positive where the atrium was missed,
negative where something else was taken). After each click: Dice, normalised surface Dice at
1 mm (NSD) and the click's seconds (in-process, the click model's ``refine`` alone); the area
under Dice over clicks 0..N (the trapezoid, divided by N). Arms a user could take instead, on
the same clicks (see ``interactive_arms.py``): ``naive`` (no model), ``brush`` (the clicked
slice painted perfectly), ``finetune`` (a quick fine-tune round per click, slow: opt in with
``--arms``). Then what clicks can reach (the error split into the band at the expert's surface
and blobs), and a full field of view: the case embedded in a 400 x 400 field, started from one
centre click (the default on the region around it), then the clicks.

    python benchmarks/interactive.py --threads 2 --out benchmarks/results/interactive-cpu.txt \\
        --plot docs/interactive.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "training" / "click_model"))
sys.path.insert(0, str(REPO / "training" / "default_model"))

from cache_default import DATA, default_split  # noqa: E402
from interactive_arms import STEPS, CaseState, ceiling, embedded_in_field  # noqa: E402
from train_default import cpu_name  # noqa: E402

from napari_la_dinov2.grid import field_of_view_mm  # noqa: E402
from napari_la_dinov2.inference import RegionOfInterest  # noqa: E402
from napari_la_dinov2.interactive import Refiner, load_click_model, next_click  # noqa: E402
from napari_la_dinov2.models import load_model  # noqa: E402
from napari_la_dinov2.scoring.metrics import dice, surface_dice  # noqa: E402
from napari_la_dinov2.segmentation import InferenceSettings, SegmentationEngine  # noqa: E402
from napari_la_dinov2.volume_files import read_volume  # noqa: E402

WORSE = 0.005  # a click "lowers" a case's Dice when it drops by more than this


def play(state: CaseState, arm: str, start: np.ndarray, clicks: int, work: Path) -> list[dict]:
    """The protocol from ``start``: a row per click (0 = the starting mask)."""
    mask, played = start.copy(), []
    rows = [
        dict(
            click=0,
            dice=dice(mask, state.truth),
            nsd=surface_dice(mask, state.truth, state.spacing),
            seconds=0.0,
        )
    ]
    for k in range(1, clicks + 1):
        click = next_click(mask, state.truth, state.spacing)
        if click is None:
            break
        played.append(click)
        tick = time.perf_counter()
        mask = STEPS[arm](state, mask, played, work=work)
        seconds = time.perf_counter() - tick
        rows.append(
            dict(
                click=k,
                dice=dice(mask, state.truth),
                positive=click.positive,
                nsd=surface_dice(mask, state.truth, state.spacing),
                seconds=seconds,
            )
        )
    while len(rows) <= clicks:  # no error left: the mask stays
        rows.append({**rows[-1], "click": len(rows), "seconds": 0.0})
    return rows


def load_state(name, default_predictor, refiner, roi_field=False) -> tuple[CaseState, float]:
    image, meta = read_volume(DATA / "images" / f"{name}.nii.gz")
    truth, _ = read_volume(DATA / "labels" / f"{name}.nii.gz")
    truth = (truth > 0).astype(np.uint8)
    roi = None
    if roi_field:
        image, truth, meta = embedded_in_field(image, truth, meta)
        centre = np.round(np.argwhere(truth).mean(0)).astype(int)
        extent, _ = field_of_view_mm(default_predictor.model.provenance)
        roi = RegionOfInterest.around(centre, meta, extent)
    tick = time.perf_counter()
    prepared = default_predictor.prepare(image, meta, roi=roi)
    probability = default_predictor.probabilities(prepared)
    auto = default_predictor.labels(probability, prepared)
    seconds = time.perf_counter() - tick
    state = CaseState(
        name, image, truth, meta, probability, auto, refiner, refiner.prepare(image, meta, roi=roi)
    )
    return state, seconds


def summary(rows: list[dict], arms, clicks: int) -> list[str]:
    lines = [
        "| arm | "
        + " | ".join(f"Dice {k}" for k in range(clicks + 1))
        + f" | NSD {clicks} | AUC | worse clicks | median s | max s |",
        "|---|" + "---|" * (clicks + 6),
    ]
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        by_k = [[r for r in mine if r["click"] == k] for k in range(clicks + 1)]
        means = [np.mean([r["dice"] for r in rs]) for rs in by_k]
        auc = np.trapezoid(means) / clicks
        pairs = [
            (a["dice"], b["dice"])
            for a, b in zip(mine, mine[1:], strict=False)
            if b["click"] == a["click"] + 1 and "positive" in b
        ]
        worse = sum(1 for a, b in pairs if b < a - WORSE)
        times = [r["seconds"] for r in mine if "positive" in r]
        nsd = np.mean([r["nsd"] for r in by_k[clicks]])
        lines.append(
            f"| {arm} | "
            + " | ".join(f"{m:.4f}" for m in means)
            + f" | {nsd:.4f} | {auc:.4f} | {worse}/{len(pairs)} | "
            f"{np.median(times):.3f} | {max(times):.3f} |"
        )
    return lines


def plot(rows, arms, clicks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for arm in arms:
        means = [
            np.mean([r["dice"] for r in rows if r["arm"] == arm and r["click"] == k])
            for k in range(clicks + 1)
        ]
        ax.plot(range(clicks + 1), means, marker="o", label=arm)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean Dice (test patients)")
    ax.set_title("Correcting the default model's masks by clicks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=("test", "val"), default="test")
    parser.add_argument("--click-model", default=None, help="folder (default: the embedded one)")
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument(
        "--arms", nargs="+", default=["clicks", "naive", "brush"], choices=sorted(STEPS)
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--free", action="store_true", help="let a click both add and remove (not monotone)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N cases only")
    parser.add_argument("--no-field", action="store_true", help="skip the full field of view")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "interactive")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default = load_model("default")
    engine = SegmentationEngine(InferenceSettings(model="default", device="cpu"), model=default)
    predictor = engine.predictor  # the automatic mask and its probabilities, kept for the arms
    refiner = Refiner(load_click_model(args.click_model), monotone=not args.free)
    names = default_split(default)[args.cases][: args.limit]
    rows, ceilings, field_rows, lines = [], [], [], []
    for name in names:
        state, auto_s = load_state(name, predictor, refiner)
        ceilings.append(ceiling(state.auto, state.truth))
        for arm in args.arms:
            for row in play(state, arm, state.auto, args.clicks, args.work):
                rows.append(dict(arm=arm, case=name, **row))
        done = [r for r in rows if r["case"] == name and r["click"] == args.clicks]
        print(
            f"{name}: auto {dice(state.auto, state.truth):.4f} ({auto_s:.1f} s) -> "
            + ", ".join(f"{r['arm']} {r['dice']:.4f}" for r in done),
            flush=True,
        )
        if not args.no_field:
            fov, _ = load_state(name, predictor, refiner, roi_field=True)
            for row in play(fov, "clicks", fov.auto, args.clicks, args.work):
                field_rows.append(dict(arm="clicks", case=name, **row))
    lines += report_header(args, names)
    lines += summary(rows, args.arms, args.clicks)
    lines += report_ceiling(ceilings, rows, args.clicks)
    if field_rows:
        lines += ["", "Full field of view (400 x 400 in-plane), from one centre click:", ""]
        lines += summary(field_rows, ["clicks"], args.clicks)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(
            json.dumps(dict(rows=rows, field=field_rows, ceilings=ceilings))
        )
    if args.plot:
        plot(rows, args.arms, args.clicks, args.plot)
    return 0


def report_header(args, names) -> list[str]:
    model = load_click_model(args.click_model)
    return [
        f"# Interactive correction benchmark ({args.cases} patients: {len(names)})",
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"torch {torch.__version__}, {platform.system()}; load {os.getloadavg()[0]:.1f}",
        f"click model: window {model.window_mm} mm, crop {model.crop}, slices "
        f"{model.slice_mm or 'all'} mm apart, thresholds add {model.add_threshold} / remove "
        f"{model.remove_threshold}; runs {json.dumps(model.provenance.get('runs'))}",
        f"clicks: {args.clicks} per case, protocol: deepest point of the largest error region",
        "",
    ]


def report_ceiling(ceilings, rows, clicks) -> list[str]:
    mean = {k: float(np.mean([c[k] for c in ceilings])) for k in ceilings[0]}
    # every arm starts from the automatic mask; the share reached is the click model's
    auto = np.mean([r["dice"] for r in rows if r["click"] == 0])
    line = (
        f"What clicks can reach: {mean['band_share']:.1%} of the automatic mask's error voxels "
        "lie within one voxel of the expert's surface; fixing the 1, 3, 5 largest other error "
        f"blobs perfectly gives Dice {auto:.4f} -> {mean['fix1']:.4f}, {mean['fix3']:.4f}, "
        f"{mean['fix5']:.4f}."
    )
    final = [r["dice"] for r in rows if r["arm"] == "clicks" and r["click"] == clicks]
    if final:
        reach = (np.mean(final) - auto) / max(1e-9, mean["fix5"] - auto)
        line += (
            f" {clicks} clicks reach {np.mean(final):.4f}: {reach:.0%} of the way to the "
            "5-blob ceiling."
        )
    return ["", line]


if __name__ == "__main__":
    sys.exit(main())
