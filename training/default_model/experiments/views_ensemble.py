"""Experiment: score models that cut the volume along different axes (views), alone and with
their logits averaged, on the validation or test patients of the default model's split.

    python training/default_model/experiments/views_ensemble.py val \\
        --view axial runs/default_model ../shared/data/la2018 \\
        --view sagittal runs/sag runs/la2018_sag [--view coronal runs/cor runs/la2018_cor]

Each view: a name, a training run (its best/ checkpoint) and the case folder it slices (a
view_copy.py copy for the other axes; the voxels are the same, so the logits share one grid).
The first view's split is used. Same Predictor (flip averaging on unless `--no-flips`) and
post-processing as `la-dinov2 segment`; distances in mm on the original grid (the first view's
data). Runs trained with the engine's own `--view` slice the original cases themselves: give
them the original folder. Probabilities are clipped to [1e-6, 1 - 1e-6] before they are turned
back into logits, so a combination can differ from the packed model on a few voxels.
"""

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import load_checkpoint
from napari_la_dinov2.postprocess import postprocess
from napari_la_dinov2.scoring.metrics import evaluate_case, summarize
from napari_la_dinov2.training import load_case_folder

parser = argparse.ArgumentParser()
parser.add_argument("part", choices=("val", "test"))
parser.add_argument(
    "--view", nargs=3, action="append", required=True, metavar=("NAME", "RUN", "DATA")
)
parser.add_argument("--no-flips", dest="flips", action="store_false")
args = parser.parse_args()

split = json.loads((Path(args.view[0][1]) / "split.json").read_text())
names = split[args.part]
reference = load_case_folder(args.view[0][2], names=names)  # grid, spacing and expert masks


def logits(run: str, data: str) -> dict:
    predictor = Predictor(load_checkpoint(Path(run) / "best"), device="cpu", flip_tta=args.flips)
    out = {}
    for case in load_case_folder(data, names=names):
        p = predictor.probabilities(predictor.prepare(case.image, case.meta))
        p = np.clip(p, 1e-6, 1 - 1e-6)
        out[case.name] = np.log(p / (1 - p))
    return out


views = {name: logits(run, data) for name, run, data in args.view}
combos = [[name] for name in views]
combos += [list(c) for k in range(2, len(views) + 1) for c in itertools.combinations(views, k)]
for combo in combos:
    rows = []
    for case in reference:
        z = np.mean([views[name][case.name] for name in combo], axis=0)
        mask = postprocess(z > 0, case.meta.through_plane_axis())
        rows.append(evaluate_case(mask, case.labels > 0, case.meta.spacing))
    s = summarize(rows)
    print(
        f"{args.part} {'+'.join(combo)}: Dice {s['dice']['mean']:.4f} ± {s['dice']['sd']:.4f}  "
        f"IoU {s['iou']['mean']:.4f}  HD95 {s['hd95_mm']['mean']:.2f} mm  "
        f"ASSD {s['assd_mm']['mean']:.2f} mm  per case: "
        + " ".join(f"{r['dice']:.3f}" for r in rows),
        flush=True,
    )
