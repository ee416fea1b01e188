"""Step 3 of the click model's recipe: pack the three trained view networks into one click model.

Reads ``<work>/member<b>/weights.safetensors`` for each view (a view without a run keeps the
widened default weights, and says so), records how each was trained in the provenance, and
writes a click-model folder (``model.safetensors`` + ``config.json``), float16 with
``--half`` as the embedded one is shipped (it computes in float32).

    python training/click_model/pack_clicks.py --work runs/clicks --out runs/clicks/packed [--half]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from cache_default import default_split  # this folder is on sys.path as a script
from safetensors.torch import load_file

from napari_la_dinov2.interactive import ClickModel
from napari_la_dinov2.interactive.network import CROP
from napari_la_dinov2.models import load_model


def pack(work: Path, args) -> ClickModel:
    default = load_model("default")
    split = default_split(default)
    settings = dict(window_mm=args.window_mm, crop=args.crop, slice_mm=args.slice_mm)
    thresholds = dict(add_threshold=args.add_threshold, remove_threshold=args.remove_threshold)
    model = ClickModel.from_segmenter(default, **settings, **thresholds)
    runs = []
    for b, member in enumerate(model.members):
        run = work / f"member{b}"
        if not (run / "weights.safetensors").exists():
            print(f"view {b}: no run in {run}; it keeps the widened default weights")
            runs.append(None)
            continue
        member.load_state_dict(load_file(str(run / "weights.safetensors")))
        progress = json.loads((run / "progress.json").read_text())
        runs.append(
            dict(
                view=model.transforms[b].view,
                steps=progress["step"],
                seconds=round(progress["seconds"]),
                last_loss=progress["losses"][-1][1],
            )
        )
    model.provenance = dict(
        display_name="LA clicks (3-view UNet 2.5D, mask + click channels)",
        widened_from="default",
        trained_on=split["train"],
        validated_on=split["val"],
        runs=runs,
        machine=f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    )
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clicks"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument("--window-mm", type=float, default=15.0, help="the click's window")
    parser.add_argument(
        "--crop", type=int, default=CROP, help="side of the input crop a view runs on"
    )
    parser.add_argument(
        "--slice-mm", type=float, default=0.0, help="run on slices this far apart (0: every one)"
    )
    parser.add_argument(
        "--add-threshold", type=float, default=0.5, help="a positive click adds voxels above it"
    )
    parser.add_argument(
        "--remove-threshold", type=float, default=0.5, help="a negative click removes those below"
    )
    args = parser.parse_args(argv)
    model = pack(args.work, args)
    model.save(args.out, weights_dtype=torch.float16 if args.half else None)
    print(f"click model written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
