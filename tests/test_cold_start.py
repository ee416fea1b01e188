"""The segment path imports only what it needs: a regression guard for the cold start.

``la-dinov2 segment`` with the default model must not import what only training or DINOv2
need (transformers, monai.losses, matplotlib), nor MONAI at all, whose package-wide import
loads all of those: the default's UNets are the project's own (``models/unet.py``). Run in a fresh interpreter, since this test
session has imported them already. No timing is asserted; ``benchmarks/speed.py --only
default`` measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Top-level modules (or prefixes) that the default model's segment path must not import.
# sympy: PyTorch's Python reference kernels import it on first use (0.6 s), e.g. ``to_empty``
# of a meta-device model or a meta forward pass; loading a checkpoint must not call them.
HEAVY = (
    "transformers",
    "monai.losses",
    "monai.transforms",
    "monai.data",
    "matplotlib",
    "pandas",
    "sympy",
    "torch._dynamo",
)

_SEGMENT_AND_LIST_MODULES = """
import json, sys
import nibabel as nib, numpy as np
from napari_la_dinov2.cli import main

volume = np.random.default_rng(0).random((32, 32, 6)).astype(np.float32)
nib.save(nib.Nifti1Image(volume, np.diag([0.625, 0.625, 2.5, 1.0])), sys.argv[1])
status = main(["segment", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def _segment_in_fresh_interpreter(tmp_path) -> tuple[int, list[str]]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _SEGMENT_AND_LIST_MODULES,
            str(tmp_path / "in.nii.gz"),
            str(tmp_path / "out.nii.gz"),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["status"], report["modules"]


def test_segment_with_default_model_skips_heavy_imports(tmp_path):
    status, modules = _segment_in_fresh_interpreter(tmp_path)
    assert status == 0
    assert "monai" not in modules  # the default's UNets are the project's own (models/unet.py)
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
