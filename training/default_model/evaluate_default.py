"""Score the trained default model on its held-out cases, write its model card, and install it
into the package (src/napari_la_dinov2/weights/la_default/).

    python training/default_model/evaluate_default.py --run runs/default_model [--install]
    python training/default_model/evaluate_default.py --run runs/axial \
        --run runs/in-plane-1 --run runs/in-plane-2 --out runs/views [--install]

With several runs (the same recipe and split; other ``--view`` or ``--seed``) their best
checkpoints are packed into one ``unet_ensemble`` model that averages their logits: a multi-view
ensemble when the runs cut the volumes along different axes. ``--run PATH:VIEW`` names the view
of a run trained through-plane on a copy of the data whose affine makes another axis the slice
axis (experiments/view_copy.py; the slices are the same voxels). The model is stored with
float16 weights (half the size in the package; it still computes in float32) and scored after
that round trip, so the figures are those of what ships.

Scores the validation cases (used for early stopping) and the test cases (never used in
training or model selection) of the runs' split.json, through the same Predictor and
post-processing as `la-dinov2 segment`, with and without left-right flip averaging.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from model_card import display_name, model_card  # this folder is on sys.path when run

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import load_checkpoint, save_checkpoint
from napari_la_dinov2.models.packing import ensemble_of
from napari_la_dinov2.preprocess import VIEWS
from napari_la_dinov2.scoring.metrics import evaluate_case, summarize
from napari_la_dinov2.training import load_case_folder

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "src" / "napari_la_dinov2" / "weights" / "la_default"
SHIPPED_DTYPE = torch.float16
INSTALL_ONLY_KEYS = ("display_name", "inference")  # added by --install, not by training
# Flip averaging doubles the inference time; ship it only for a gain worth that: 0.001 Dice is
# a fifth of what one of the 8 validation patients moves the mean by.
TTA_MIN_GAIN = 0.001


def score(model, cases, flip_tta: bool) -> tuple[list[dict], float]:
    predictor = Predictor(model, device="cpu", batch_size=16, flip_tta=flip_tta)
    rows, started = [], time.perf_counter()
    for case in cases:
        pred = predictor.predict(case.image, case.meta)
        rows.append({"case": case.name, **evaluate_case(pred, case.labels, case.meta.spacing)})
    return rows, (time.perf_counter() - started) / max(len(cases), 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        help="a training run directory (PATH or PATH:VIEW); several make an ensemble",
    )
    parser.add_argument("--out", help="where the card and packed model go (default: the run)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "la2018"))
    parser.add_argument("--install", action="store_true", help="copy into the package")
    parser.add_argument(
        "--tta",
        choices=("auto", "on", "off"),
        default="auto",
        help=f"flip averaging in the shipped model: auto = on if it gains >= {TTA_MIN_GAIN} "
        "Dice on val",
    )
    return parser


def _members(runs, views) -> list:
    """Each run's best checkpoint, without what --install adds, named by the view it saw."""
    members = [load_checkpoint(run / "best") for run in runs]
    for member, view in zip(members, views, strict=True):
        for key in INSTALL_ONLY_KEYS:
            member.provenance.pop(key, None)
        if view is not None:  # trained on a view_copy.py copy: the same slices, now named
            member.provenance["view_trained_on"] = "a view_copy.py copy of the data"
    return members


def _score_val_and_test(model, data, split) -> tuple[dict, dict]:
    """Rows and seconds per volume on the validation and test cases, without and with flips."""
    results, seconds = {}, {}
    for part in ("val", "test"):
        cases = load_case_folder(data, names=split[part])
        for tta in (False, True):
            key = f"{part}{' + flip TTA' if tta else ''}"
            results[key], seconds[key] = score(model, cases, tta)
            s = summarize(results[key])
            print(
                f"{key:18s} Dice {s['dice']['mean']:.4f} ± {s['dice']['sd']:.4f}  "
                f"IoU {s['iou']['mean']:.4f}  HD95 {s['hd95_mm']['mean']:.2f} mm  "
                f"ASSD {s['assd_mm']['mean']:.2f} mm  {seconds[key]:.2f} s/volume",
                flush=True,
            )
    return results, seconds


def _flips_ship(choice: str, results: dict) -> bool:
    """--tta on/off, or auto: flips ship if they gain TTA_MIN_GAIN Dice on validation."""
    if choice != "auto":
        return {"on": True, "off": False}[choice]
    with_flips = summarize(results["val + flip TTA"])["dice"]["mean"]
    return with_flips >= summarize(results["val"])["dice"]["mean"] + TTA_MIN_GAIN


def _install(model, out: Path, use_tta: bool) -> None:
    model.provenance.update(
        {
            "display_name": display_name(model),
            "inference": {"flip_tta": bool(use_tta)},
        }
    )
    save_checkpoint(model, PACKAGE_DIR, weights_dtype=SHIPPED_DTYPE)
    shutil.copy(out / "MODEL_CARD.md", PACKAGE_DIR / "MODEL_CARD.md")
    (PACKAGE_DIR / "README.md").unlink(missing_ok=True)  # the hub mixin's stub card
    print(f"installed into {PACKAGE_DIR}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    runs, views = zip(*(run_and_view(r) for r in (args.run or ["runs/default_model"])))
    if len(runs) > 1 and not args.out:
        parser.error("several runs make an ensemble: say where it goes with --out")
    out = Path(args.out) if args.out else runs[0]
    split = json.loads((runs[0] / "split.json").read_text())
    for run in runs[1:]:
        if json.loads((run / "split.json").read_text()) != split:
            parser.error(f"{run} was trained on another split than {runs[0]}")
    train_seconds = [run_seconds(run) for run in runs]
    members = _members(runs, views)
    own = [v or m.preprocessing.views[0] for v, m in zip(views, members, strict=True)]
    packed = ensemble_of(members, views=own) if len(members) > 1 else members[0]
    # Score what ships: the float16-stored weights, loaded back.
    save_checkpoint(packed, out / "packed", weights_dtype=SHIPPED_DTYPE)
    model = load_checkpoint(out / "packed")
    results, seconds = _score_val_and_test(model, args.data, split)
    use_tta = _flips_ship(args.tta, results)
    member_dice = []
    if len(members) > 1:  # each member alone on the validation cases, as shipped (flips)
        val_cases = load_case_folder(args.data, names=split["val"])
        for run, member in zip(runs, members, strict=True):
            rows, _ = score(member, val_cases, use_tta)
            member_dice.append(summarize(rows)["dice"]["mean"])
            print(f"member {run.name}: val Dice {member_dice[-1]:.4f}", flush=True)
    card = model_card(model, runs, split, results, seconds, train_seconds, use_tta, member_dice)
    (out / "MODEL_CARD.md").write_text(card)
    print(card)
    if args.install:
        _install(model, out, use_tta)
    return 0


def run_and_view(text: str) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH:VIEW`` (a view name from napari_la_dinov2.preprocess.VIEWS)."""
    path, _, view = text.rpartition(":")
    return (Path(path), view) if path and view in VIEWS else (Path(text), None)


def run_seconds(run: Path) -> float:
    rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    return sum(float(row[-1]) for row in rows[1:])


if __name__ == "__main__":
    sys.exit(main())
