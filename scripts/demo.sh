#!/usr/bin/env bash
# The main job of the README: set up, then segment a volume with the embedded default model.
#   bash scripts/demo.sh [VOLUME.nii.gz|.nrrd] [OUTPUT_DIR]
# Without a VOLUME it takes a real case of ../shared/data/la2018 (or $LA2018_DIR) that the
# embedded model never saw (its test split) when present, else a synthetic LGE-like sample made
# by the package. Writes OUTPUT_DIR/<name>_la.nii.gz and a PNG overlay; with a display (DISPLAY set) it then opens napari with the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${2:-out}
mkdir -p "$out"
volume=${1:-}
if [ -z "$volume" ]; then
  data=${LA2018_DIR:-../shared/data/la2018}
  if [ -f "$data/cases.txt" ]; then
    # A case the embedded model never saw in training or model selection (its test split).
    case=$(.venv/bin/python - "$data/cases.txt" <<'PY'
import sys
from napari_la_dinov2.models import load_model
cases = open(sys.argv[1]).read().split()
print((load_model("default").unseen(cases) or cases)[0])
PY
)
    volume="$data/images/$case.nii.gz"
  else
    volume="$out/sample_lge.nii.gz"
    [ -f "$volume" ] || .venv/bin/python - "$volume" <<'PY'
import sys, nibabel as nib
from napari_la_dinov2._sample_data import make_sample
image, _, meta = make_sample()
nib.save(nib.Nifti1Image(image, meta.affine), sys.argv[1])
PY
  fi
fi
name=$(basename "$volume"); name=${name%.gz}; name=${name%.nii}; name=${name%.nrrd}
.venv/bin/la-dinov2 segment "$volume" --out "$out/${name}_la.nii.gz" --png "$out/${name}_la.png" --overwrite
if [ -n "${DISPLAY:-}" ] && [ -z "${CI:-}" ]; then
  # The viewer segments the volume again in a worker (about a second) with the widgets docked.
  exec .venv/bin/python -m napari_la_dinov2.launch "$volume"
fi
