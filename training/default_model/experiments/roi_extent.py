"""Experiment: how a model copes with a region of interest that is shorter along z than the
training crops (88 slices), on the test patients of the default model's split.

    python training/default_model/experiments/roi_extent.py \\
        --model new src/napari_la_dinov2/weights/la_default --model old /tmp/old_default

A stretching in-plane member sees a shorter z range spread over its whole input, so it sees the
anatomy at another scale than in training; a padding one sees it at the training scale. Each
row: the region's z range = the atrium's own extent plus a margin of M slices on either side
(all 88 slices: "full"); the in-plane extent is the whole crop. Dice over the whole volume (the
mask is 0 outside the region, which holds all of the atrium).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from napari_la_dinov2.inference import Predictor, RegionOfInterest
from napari_la_dinov2.models import load_checkpoint
from napari_la_dinov2.scoring.metrics import dice
from napari_la_dinov2.training import load_case_folder

REPO = Path(__file__).resolve().parents[3]
parser = argparse.ArgumentParser()
parser.add_argument("--model", nargs=2, action="append", required=True, metavar=("NAME", "DIR"))
parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "la2018"))
parser.add_argument("--margins", type=int, nargs="+", default=[20, 10, 4])
args = parser.parse_args()

split = json.loads((REPO / "training/default_model/results/split.json").read_text())
cases = load_case_folder(args.data, names=split["test"])
predictors = {name: Predictor(load_checkpoint(folder), device="cpu") for name, folder in args.model}
for margin in [None, *args.margins]:
    scores = {name: [] for name in predictors}
    extents = []
    for case in cases:
        z = np.flatnonzero(case.labels.any(axis=(0, 1)))
        if margin is None:
            roi = None
            extents.append(case.image.shape[2])
        else:
            z0, z1 = max(0, z[0] - margin), min(case.image.shape[2], z[-1] + 1 + margin)
            roi = RegionOfInterest(slices=(int(z0), int(z1)))
            extents.append(z1 - z0)
        for name, predictor in predictors.items():
            mask = predictor.predict(case.image, case.meta, roi=roi)
            scores[name].append(dice(mask, case.labels))
    what = "full" if margin is None else f"atrium ± {margin}"
    print(
        f"z range {what:12s} ({np.mean(extents):.0f} slices on average): "
        + "  ".join(f"{n} {np.mean(s):.4f} ± {np.std(s):.4f}" for n, s in scores.items()),
        flush=True,
    )
