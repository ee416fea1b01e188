"""Experiment helper: a copy of the LA 2018 cases that the engine slices along another axis.

    python training/default_model/experiments/view_copy.py ../shared/data/la2018 runs/la2018_sag 0
    python training/default_model/experiments/view_copy.py ../shared/data/la2018 runs/la2018_cor 1

The voxels are unchanged; only the affine says that array axis 0 (x: sagittal slices) or 1 (y:
coronal slices) is the coarsest (2.0 mm), and the engine cuts slices along the coarsest axis.
Then train as usual on the copy:
    python training/default_model/train_default.py --data runs/la2018_sag --out runs/sag --threads 2
Distances (HD95, ASSD) on a copy are not in mm; score the views with views_ensemble.py.
"""

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

source, target, axis = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spacing = [0.625, 0.625, 1.25]
spacing[axis] = 2.0
for sub in ("images", "labels"):
    (target / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((source / sub).glob("*.nii.gz")):
        data = np.asanyarray(nib.load(str(path)).dataobj)
        nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(target / sub / path.name))
shutil.copy(source / "cases.txt", target / "cases.txt")
print(
    f"{target}: {len(list((target / 'images').glob('*.nii.gz')))} cases, slices along axis {axis}"
)
