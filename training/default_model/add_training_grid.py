#!/usr/bin/env python
"""Record the embedded default model's training grid in its config.json provenance.

The model was trained before checkpoints recorded it. This reads the headers (not the voxels)
of the 64 cases listed in ``provenance["trained_on"]`` from the LA 2018 data
(``../shared/data/la2018`` or ``$LA2018_DIR``) and writes ``provenance["training_grid"]``
with the same function ``finetune`` uses (``napari_la_dinov2.grid.training_grid``): the median
voxel size and field of view in mm, in the order (in-plane 1, in-plane 2, through-plane).
Only config.json changes (the rest of it byte for byte); the weights are untouched.

    python training/default_model/add_training_grid.py [--check]

``--check`` only says whether config.json already holds what this would write (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import nibabel as nib

from napari_la_dinov2.grid import training_grid
from napari_la_dinov2.volume_files import VolumeMeta

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "src" / "napari_la_dinov2" / "weights" / "la_default" / "config.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("LA2018_DIR", ROOT.parent / "shared" / "data" / "la2018"))
    if not (data / "images").is_dir():
        sys.exit(f"LA 2018 data not found at {data}; set LA2018_DIR.")
    config = json.loads(CONFIG.read_text())
    metas = []
    for case in config["provenance"]["trained_on"]:
        header = nib.load(data / "images" / f"{case}.nii.gz")  # the header only: no voxels read
        metas.append(VolumeMeta(affine=header.affine, shape=header.shape))
    grid = training_grid(metas)
    if args.check:
        same = config["provenance"].get("training_grid") == grid
        print(f"config.json training_grid {'matches' if same else 'differs from'} {grid}")
        return 0 if same else 1
    config["provenance"]["training_grid"] = grid
    # Written as it shipped (indent 2, keys in their order, a final newline), so the diff is
    # the added key alone.
    CONFIG.write_text(json.dumps(config, indent=2) + "\n")
    print(f"{CONFIG.relative_to(ROOT)}: training_grid = {grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
