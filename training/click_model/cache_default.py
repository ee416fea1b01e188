"""Step 1 of the click model's recipe: the embedded default model's own logits, per view, on
every LA 2018 case it was trained or validated on (never its test cases).

The click model learns to correct the default's masks, so the masks it starts from in training
are the default's: the fused mask and each view's own mask (weaker, with the blob errors a user
meets: pulmonary-vein stumps, the mitral plane, the appendage). Each case is saved as
``<work>/cache/<case>.npz`` (float16 logits, one array per view, on the volume's grid);
a case already there is skipped, so the step resumes where it stopped.

    python training/click_model/cache_default.py --work runs/clicks [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import load_model
from napari_la_dinov2.training.cases import find_case_pairs

DATA = Path(
    os.environ.get("LA2018_DIR", Path(__file__).resolve().parents[3] / "shared/data/la2018")
)


def default_split(model) -> dict[str, list[str]]:
    """The default model's own split, from its provenance: train, validation (it chose its
    checkpoint on those) and test (never seen)."""
    trained = list(model.provenance["trained_on"])
    validated = list(model.provenance["validated_on"])
    every = [line.strip() for line in (DATA / "cases.txt").read_text().splitlines() if line.strip()]
    test = [name for name in every if name not in set(trained) | set(validated)]
    return dict(train=trained, val=validated, test=test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clicks"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from napari_la_dinov2.volume_files import read_volume

    model = load_model("default")
    predictor = Predictor(model, device="cpu")
    split = default_split(model)
    pairs = {name: (image, label) for name, image, label in find_case_pairs(DATA)}
    out = args.work / "cache"
    out.mkdir(parents=True, exist_ok=True)
    names = [name for s in args.splits for name in split[s]]
    for i, name in enumerate(names):
        target = out / f"{name}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        volume, meta = read_volume(pairs[name][0])
        prepared = predictor.prepare(volume, meta)
        logits = [predictor.branch_logits(prepared, b) for b in range(len(prepared.axes))]
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, **{f"view{b}": x.astype(np.float16) for b, x in enumerate(logits)})
        tmp.rename(target)
        print(f"{i + 1}/{len(names)} {name} {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
