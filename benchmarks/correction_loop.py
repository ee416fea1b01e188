"""The correction loop, measured: a simulated user corrects a weak model's masks case after case.

Starts from a weak model (the embedded default's architecture, trained on 4 LA 2018 patients)
and takes the default model's 8 test patients in sequence. For each case: predict, count what
the user must correct against the expert mask (1 - Dice, and the slices whose error is over
5%), "correct" it, run a quick round (``TrainConfig.quick_round``, earlier corrected cases
replayed), then go on. Three arms on the same sequence:

- ``none``: no fine-tuning (the weak model throughout);
- ``whole``: the user corrects whole cases (the expert mask), and each round trains on them;
- ``doubt``: the user fixes only the k most doubtful slices (``doubt.rank_slices``; k = 10% of
  the slices), the rest keeps the model's guess, and the round weighs the fixed slices.

After each round the corrected case is segmented again ("after its round"): what the round
learned from the corrections. It also reports whether the doubt ranking finds the errors: the
share of the error voxels that lie in the 10% most doubtful slices (a random choice of slices
holds 10% on average; the 10% of slices with the most errors, the best any ranking of whole
slices can do, is given beside it), for the weak model and for the embedded default model on
the same patients. For the embedded default model it also runs one quick round per case (each
from the shipped model): its time, and the case's and the next case's 1 - Dice before and
after. The per-case rows are also written to ``<work>/rows.json``.

    python benchmarks/correction_loop.py --threads 2 --out benchmarks/results/correction-loop-cpu.txt

About 15 minutes on a quiet 2-core CPU (the weak model's training, 4 minutes, is reused from
``--work`` when it is there).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_la_dinov2.doubt import rank_slices  # noqa: E402
from napari_la_dinov2.models import load_model  # noqa: E402
from napari_la_dinov2.scoring.metrics import dice  # noqa: E402
from napari_la_dinov2.segmentation import InferenceSettings, SegmentationEngine  # noqa: E402
from napari_la_dinov2.training import TrainConfig, finetune, load_case_folder  # noqa: E402
from napari_la_dinov2.training.state import read_history  # noqa: E402

ARMS = ("none", "whole", "doubt")
SLICE_ERROR = 0.05  # a slice "needs correcting" when its 1 - Dice is above this
WEAK = dict(  # the embedded default's architecture and input, trained briefly on 4 patients
    model="unet_ensemble",
    model_kwargs=dict(members=3, channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2]),
    preprocessing=dict(
        input_size=192,
        intensity="zscore",
        context=1,
        branches=[
            dict(view="through-plane", fit="pad"),
            dict(view="in-plane-1", fit="stretch"),
            dict(view="in-plane-2", fit="stretch"),
        ],
    ),
    loss="bce_dice",
    lr=1e-3,
    schedule="cosine",
    pretrained=False,
)


def effort(mask: np.ndarray, truth: np.ndarray, slice_axis: int) -> tuple[float, int]:
    """(1 - Dice, slices whose own 1 - Dice is above SLICE_ERROR) of a mask against the truth."""
    bad = 0
    for z in range(mask.shape[slice_axis]):
        m, t = np.take(mask, z, slice_axis) > 0, np.take(truth, z, slice_axis) > 0
        if (m.any() or t.any()) and 1 - dice(m, t) > SLICE_ERROR:
            bad += 1
    return _error(mask, truth), bad


def doubt_capture(mask, truth, doubt, slice_axis: int) -> tuple[float, float]:
    """Share of the error voxels in the 10% most doubtful slices (``rank_slices``, as the
    Segment dock ranks them), and in the 10% of slices that hold the most errors (the most
    any ranking of whole slices can reach)."""
    errors = np.moveaxis((mask > 0) != (truth > 0), slice_axis, 0).reshape(
        mask.shape[slice_axis], -1
    )
    per_slice = errors.sum(1)
    if not per_slice.sum():
        return float("nan"), float("nan")
    k = max(1, mask.shape[slice_axis] // 10)
    top = rank_slices(doubt, slice_axis, count=k, mask=mask)
    best = np.sort(per_slice)[::-1][:k]
    return float(per_slice[top].sum() / per_slice.sum()), float(best.sum() / per_slice.sum())


def predict(model, case):
    """(mask, doubt, slice axis) of ``model`` on ``case``, as the Segment dock makes them."""
    settings = InferenceSettings(device="cpu", batch_size=8, doubt=True)
    result = SegmentationEngine(settings, model=model).segment(case.image, case.meta)
    return result.labels, result.doubt, result.slice_axis


def fixed_slices(mask, truth, doubt, slice_axis: int, k: int) -> np.ndarray:
    """The user's correction in the doubt arm: the k most doubtful slices take the expert's."""
    corrected = mask.copy()
    for z in rank_slices(doubt, slice_axis, count=k):
        index = [slice(None)] * 3
        index[slice_axis] = z
        corrected[tuple(index)] = truth[tuple(index)]
    return corrected


def run_arm(arm, weak_dir, sequence, args, log) -> list[dict]:
    model, replay, rows = load_model(weak_dir), [], []
    for index, case in enumerate(sequence):
        mask, doubt, axis = predict(model, case)
        loss, bad = effort(mask, case.labels, axis)
        capture, ceiling = doubt_capture(mask, case.labels, doubt, axis)
        row = dict(
            arm=arm,
            case=index + 1,
            name=case.name,
            one_minus_dice=loss,
            bad_slices=bad,
            doubt_capture=capture,
            best_capture=ceiling,
            round_s=0.0,
            after=loss,
        )
        if arm != "none":
            k = max(1, case.image.shape[axis] // 10)
            labels = (
                case.labels if arm == "whole" else fixed_slices(mask, case.labels, doubt, axis, k)
            )
            if not labels.any():
                labels = case.labels
            corrected = replace(case, labels=labels, prediction=mask)
            config = TrainConfig.quick_round(
                model=str(weak_dir) if index == 0 and not replay else str(args.work / arm / "last"),
                device="cpu",
                output_dir=str(args.work / arm / f"round{index + 1}"),
                seed=index,
                **_round_steps(args),
            )
            started = time.perf_counter()
            result = finetune([corrected], config, replay=replay[-args.replay :] or None)
            row["round_s"] = time.perf_counter() - started
            model = result.model.eval()
            row["after"] = _error(predict(model, case)[0], case.labels)
            args.work.joinpath(arm).mkdir(parents=True, exist_ok=True)
            _link_last(args.work / arm / "last", result.last_checkpoint)
            replay.append(corrected)
        rows.append(row)
        log(
            f"{arm:6s} case {index + 1} {case.name}: 1-Dice {loss:.3f}, {bad} slices to fix, "
            f"doubt capture {capture:.2f} (best {ceiling:.2f}), round {row['round_s']:.0f} s, "
            f"1-Dice after it {row['after']:.3f}"
        )
    return rows


def _round_steps(args) -> dict:
    """The quick round's preset, with the steps or the rate asked for instead."""
    asked = {"steps_per_epoch": args.round_steps, "lr": args.round_lr}
    return {key: value for key, value in asked.items() if value}


def _link_last(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve(), target_is_directory=True)


def train_weak(cases, args, log) -> Path:
    out = args.work / "weak"
    if (out / "best" / "model.safetensors").is_file():
        best = max(row["val_dice"] for row in read_history(out / "history.csv"))
        log(f"weak model: reusing {out / 'best'} (4 patients, val Dice {best:.3f})")
        return out / "best"
    config = TrainConfig(
        **WEAK,
        epochs=args.weak_epochs,
        steps_per_epoch=args.weak_steps,
        batch_size=8,
        device="cpu",
        output_dir=str(out),
        seed=0,
    )
    started = time.perf_counter()
    result = finetune(cases[:4], config, val_cases=cases[4:6])
    log(
        f"weak model: 4 patients, {args.weak_epochs} x {args.weak_steps} steps, "
        f"val Dice {result.best_val_dice:.3f}, {time.perf_counter() - started:.0f} s"
    )
    return out / "best"


def summary(rows: list[dict], default_rows: list[dict]) -> list[str]:
    lines = [
        "| arm | 1 - Dice (cases 2-8) | slices to fix (cases 2-8) | s / round | "
        "1 - Dice of the corrected case after its round |",
        "|---|---|---|---|---|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        later = [r for r in rows if r["arm"] == arm and r["case"] > 1]
        mine = [r for r in rows if r["arm"] == arm]
        rounds = [r["round_s"] for r in mine if r["round_s"]]
        lines.append(
            f"| {arm} | {np.mean([r['one_minus_dice'] for r in later]):.3f} | "
            f"{np.mean([r['bad_slices'] for r in later]):.1f} | "
            f"{np.mean(rounds) if rounds else 0:.0f} | "
            f"{np.mean([r['after'] for r in mine]):.3f} |"
        )
    lines.append(
        "\nDoubt ranking: share of the error voxels in the 10% most doubtful slices "
        "(random: 10%; best: the 10% of slices with the most errors)"
    )
    weak = [r for r in rows if r["arm"] == "none"]  # the weak model itself on every case
    for name, mine in (("weak model", weak), ("embedded default model", default_rows)):
        if not mine:
            continue
        capture = np.nanmean([r["doubt_capture"] for r in mine])
        best = np.nanmean([r["best_capture"] for r in mine])
        lines.append(f"- {name}: {capture:.1%} ({capture / 0.1:.1f}x random; best {best:.1%})")
    if default_rows:
        follow = [r for r in default_rows if "next_after" in r]
        lines.append(
            "\nEmbedded default model, one quick round per case (each from the shipped model, on "
            f"the case's expert mask): {np.mean([r['round_s'] for r in default_rows]):.0f} s a "
            f"round; 1 - Dice of the case {np.mean([r['before'] for r in default_rows]):.3f} -> "
            f"{np.mean([r['after'] for r in default_rows]):.3f}; of the next case "
            f"{np.mean([r['next_before'] for r in follow]):.3f} -> "
            f"{np.mean([r['next_after'] for r in follow]):.3f}."
        )
    return lines


def default_model_rounds(sequence, args, log) -> list[dict]:
    """The model users start from, on the same patients: its doubt ranking, and one quick round
    per case (each from the embedded model, on the case's expert mask as the correction): its
    time, the case's 1 - Dice before and after, and the next case's."""
    model, rows = load_model("default"), []
    before = [predict(model, case) for case in sequence]
    for index, case in enumerate(sequence):
        mask, doubt, axis = before[index]
        capture, ceiling = doubt_capture(mask, case.labels, doubt, axis)
        config = TrainConfig.quick_round(
            model="default",
            device="cpu",
            seed=index,
            output_dir=str(args.work / f"default-round{index + 1}"),
            **_round_steps(args),
        )
        started = time.perf_counter()
        tuned = finetune([replace(case, prediction=mask)], config).model.eval()
        row = dict(
            doubt_capture=capture,
            best_capture=ceiling,
            round_s=time.perf_counter() - started,
            before=_error(mask, case.labels),
            after=_error(predict(tuned, case)[0], case.labels),
        )
        if index + 1 < len(sequence):
            following = sequence[index + 1]
            row["next_before"] = _error(before[index + 1][0], following.labels)
            row["next_after"] = _error(predict(tuned, following)[0], following.labels)
        rows.append(row)
        log(
            f"default case {index + 1} {case.name}: 1-Dice {row['before']:.3f}, after its round "
            f"{row['after']:.3f} ({row['round_s']:.0f} s); doubt capture {capture:.2f} (best "
            f"{ceiling:.2f})"
            + (
                f"; next case {row['next_before']:.3f} -> {row['next_after']:.3f}"
                if "next_after" in row
                else ""
            )
        )
    return rows


def _error(mask, truth) -> float:
    """1 - Dice of a mask against the expert's."""
    return 1 - dice(mask > 0, truth > 0)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.4), dpi=110)
    panels = (
        ("one_minus_dice", "1 - Dice before correction"),
        ("bad_slices", "slices with error > 5%"),
        ("after", "1 - Dice of the case after its round"),
    )
    for axes, (key, label) in zip(figure.subplots(1, 3), panels):
        for arm in dict.fromkeys(r["arm"] for r in rows):
            mine = [r for r in rows if r["arm"] == arm]
            axes.plot([r["case"] for r in mine], [r[key] for r in mine], marker="o", label=arm)
        axes.set(xlabel="case in sequence", ylabel=label)
    figure.axes[0].legend()
    figure.tight_layout()
    figure.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "la2018")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "correction-loop")
    parser.add_argument("--weak-epochs", type=int, default=6)
    parser.add_argument("--weak-steps", type=int, default=50)
    parser.add_argument("--replay", type=int, default=2, help="earlier cases replayed per round")
    parser.add_argument("--cases", type=int, default=8, help="fewer only to smoke-test")
    parser.add_argument("--round-steps", type=int, help="the quick round's steps (its preset)")
    parser.add_argument("--round-lr", type=float, help="the quick round's rate (its preset)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the log and table here")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "correction_loop.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [
        f"# benchmarks/correction_loop.py {' '.join(argv or sys.argv[1:])}",
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
    ]

    def log(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    print("\n".join(lines))
    split = json.loads((REPO / "training/default_model/results/split.json").read_text())
    weak_dir = train_weak(
        load_case_folder(args.data, names=split["train"][:4] + split["val"][:2]), args, log
    )
    sequence = load_case_folder(args.data, names=split["test"][: args.cases])
    rows = [row for arm in args.arms for row in run_arm(arm, weak_dir, sequence, args, log)]
    default_rows = default_model_rounds(sequence, args, log)
    for line in summary(rows, default_rows):
        log(line)
    plot(rows, args.plot)
    args.work.joinpath("rows.json").write_text(json.dumps(rows, indent=1))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
