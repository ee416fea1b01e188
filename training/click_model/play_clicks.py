"""Step 3 of the click model's recipe (optional, iterative training): the click model's own
corrections on its training patients, as a user playing the protocol would leave them.

Training episodes that start from the default's masks with earlier clicks pasted perfectly
never show the network what its own corrections leave behind: a partly fixed sheet of wall, a
vein stump shaved too far. As interactive segmentation's iterative training (RITM) does, this
plays the benchmark's protocol (:func:`~napari_la_dinov2.interactive.next_click`) with a click
model on every training case, from the automatic mask, and saves the mask and the clicks after
each click as ``<work>/played/<case>.npz``; ``train_clicks.py --played-share`` then starts that
share of its episodes from those states. A case already there is skipped, so the step resumes.

    python training/click_model/play_clicks.py --work runs/clicks --clicks 4 [--click-model DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from cache_default import default_split  # this folder is on sys.path as a script
from train_clicks import load_cases

from napari_la_dinov2.interactive import Refiner, load_click_model, next_click
from napari_la_dinov2.models import load_model
from napari_la_dinov2.volume_files import read_volume


def play(refiner: Refiner, case, clicks: int) -> dict[str, np.ndarray]:
    """The masks (bit-packed) and clicks (``i, j, k, positive``) after each of ``clicks``."""
    from cache_default import DATA

    image, meta = read_volume(DATA / "images" / f"{case.name}.nii.gz")
    prepared = refiner.prepare(image, meta)
    mask, played, masks = case.start_mask("fused").astype(np.uint8), [], []
    for _ in range(clicks):
        click = next_click(mask, case.truth, case.spacing)
        if click is None:
            break
        played.append(click)
        mask = refiner.refine(prepared, mask, played)
        masks.append(np.packbits(mask.astype(bool)))
    rows = [(*c.position, int(c.positive)) for c in played]
    return dict(masks=np.stack(masks), clicks=np.asarray(rows, np.int32))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clicks"))
    parser.add_argument("--click-model", default=None, help="folder (default: the embedded one)")
    parser.add_argument("--clicks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    refiner = Refiner(load_click_model(args.click_model))
    out = args.work / "played"
    out.mkdir(parents=True, exist_ok=True)
    names = default_split(load_model("default"))["train"]
    for i, name in enumerate(names):
        target = out / f"{name}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        (case,) = load_cases([name], args.work)
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, **play(refiner, case, args.clicks))
        tmp.rename(target)
        print(f"{i + 1}/{len(names)} {name} {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
