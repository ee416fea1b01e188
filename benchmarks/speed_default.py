"""The default model's figures for ``benchmarks/speed.py`` (``--only default`` runs just these).

1. Cold start: ``la-dinov2 segment`` on a real case in a fresh interpreter, timed from just
   before the parent spawns it (interpreter start, imports, model load and reading the volume
   all count) to the end of its first batch of slices, as the Predictor reports progress. The
   same command after MONAI's package-wide import (``import monai`` first: what every segment
   paid before ``models/_monai_nets.py``) and a bare ``python -c "import torch"`` (the floor)
   are timed in the same run, interleaved with it.
2. The default model on the whole case: seconds per volume through ``Predictor.predict``, and
   its overhead over the networks alone (each member on its own view's prepared batches).

Timings are the best of ``repeats`` interleaved runs (the cold start's runs are printed too):
the machine may be shared, and the best run is the least disturbed; the ratios between
figures of one run are the meaningful part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_FIRST_SLICE_S = 3.0

# Run by a fresh interpreter: the CLI's own `segment`, with the Predictor's progress callback
# wrapped to stamp the wall clock (time.time(), comparable with the parent's) when the model is
# ready (progress 0) and when the first batch of slices is done.
_CHILD = r"""
import json, sys, time
if sys.argv[1] == "full-monai":
    import monai  # MONAI's package-wide import, as before models/_monai_nets.py
marks = {}
if sys.argv[1] == "imports-paid":  # a napari session: torch and nibabel loaded with the plugin
    import nibabel, torch
    marks["start"] = time.time()
from napari_la_dinov2 import inference
from napari_la_dinov2.cli import main

predict = inference.Predictor.probabilities

def timed(self, prepared, *, progress=None, **kwargs):
    def mark(done, total):
        marks.setdefault("ready" if done == 0 else "first_slice", time.time())
        if progress:
            progress(done, total)
    return predict(self, prepared, progress=mark, **kwargs)

inference.Predictor.probabilities = timed
status = main(["segment", sys.argv[2], "--out", sys.argv[3], "--overwrite"])
print(json.dumps({"status": status, "end": time.time(), **marks}))
"""


def _child_env() -> dict:
    # This checkout's package, whatever is installed.
    path = [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _spawn(command: list[str]) -> tuple[float, dict]:
    """Wall time from just before the spawn to the end, and the child's last JSON line."""
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    marks = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return end - start, {k: v - start for k, v in marks.items() if k != "status"}


def measure_cold_start(case: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds from spawn, per mode and mark (``light.first_slice``...), one per repeat; the
    modes are interleaved so that each gets the same chance of a quiet moment."""
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "mask.nii.gz")
        for _ in range(repeats):
            for mode in ("light", "full-monai", "imports-paid"):
                total, marks = _spawn([sys.executable, "-c", _CHILD, mode, str(case), out])
                for key, value in {**marks, "total": total}.items():
                    runs.setdefault(f"{mode}.{key}", []).append(value)
            for name, imports in (("import_torch", "torch"), ("import_both", "torch, nibabel")):
                floor, _ = _spawn([sys.executable, "-c", f"import {imports}"])
                runs.setdefault(name, []).append(floor)
    return runs


def measure_volume(case: Path, batch_size: int, repeats: int) -> dict:
    """The default model on the whole case: pipeline vs its networks on prepared batches."""
    import numpy as np
    import torch

    from napari_la_dinov2.inference import Predictor
    from napari_la_dinov2.models import load_model
    from napari_la_dinov2.postprocess import postprocess
    from napari_la_dinov2.preprocess import IntensityStats, view_axis
    from napari_la_dinov2.volume_files import read_volume

    volume, meta = read_volume(case)
    # The Predictor itself, not the engine's entry: this times Predictor.predict against the
    # networks it runs (the entry's measures and mesh are not the overhead measured here).
    predictor = Predictor(load_model("default"), device="cpu", batch_size=batch_size)
    axis = meta.through_plane_axis()
    stats = IntensityStats.of(volume)
    views = []  # (network, prepared batches) per branch, made once
    for branch in predictor.branches:
        net, transform = branch.net, branch.transform
        region = np.moveaxis(volume, view_axis(axis, branch.view), 0)
        with torch.inference_mode():
            batches = [
                transform.model_input(transform.gather(region, i, i + batch_size), stats)
                for i in range(0, region.shape[0], batch_size)
            ]
        views.append((net, batches))

    def networks():
        with torch.inference_mode():
            for net, batches in views:
                for batch in batches:
                    net(batch)

    mask = predictor.predict(volume, meta, slice_axis=axis).astype(bool)  # also the warm-up
    steps = dict(
        pipeline=lambda: predictor.predict(volume, meta, slice_axis=axis),
        networks=networks,
        post=lambda: postprocess(mask, axis),
    )
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):  # interleaved: each step gets the same chance of a quiet moment
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    slices = sum(sum(len(b) for b in batches) for _, batches in views)
    return dict(
        best,
        shape=list(volume.shape),
        slices=slices,
        views=len(views),
        flip_tta=predictor.flip_tta,
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def report(case: Path, batch_size: int, repeats: int) -> list[str]:
    """The lines speed.py prints for the default model."""
    runs = measure_cold_start(case, repeats)
    cold = {key: min(values) for key, values in runs.items()}
    vol = measure_volume(case, batch_size, repeats)
    first = cold["light.first_slice"]
    paid_runs = [
        f - s
        for f, s in zip(runs["imports-paid.first_slice"], runs["imports-paid.start"], strict=True)
    ]
    paid = min(paid_runs)
    overhead = vol["pipeline"] / vol["networks"] - 1
    met = "met" if first < TARGET_FIRST_SLICE_S else "MISSED"
    return [
        f"default model, la2018 case {case.name.split('.')[0]} {'x'.join(map(str, vol['shape']))}, "
        f"batch {batch_size}, best of {repeats} interleaved runs",
        "cold start: `la-dinov2 segment CASE --out MASK` in a fresh interpreter, seconds from "
        "just before the spawn:",
        f"  first batch of slices done {first:.2f} s (model ready {cold['light.ready']:.2f} s; "
        f"whole command {cold['light.total']:.2f} s); runs: {_runs(runs['light.first_slice'])}",
        f"  after MONAI's package-wide import (`import monai` first, as before): first slice "
        f"{cold['full-monai.first_slice']:.2f} s, {cold['full-monai.first_slice'] / first:.2f}x "
        f"(whole command {cold['full-monai.total']:.2f} s); runs: "
        f"{_runs(runs['full-monai.first_slice'])}",
        f"  `python -c 'import torch'` (interpreter + torch, the floor): "
        f"{cold['import_torch']:.2f} s; runs: {_runs(runs['import_torch'])}",
        f"  `python -c 'import torch, nibabel'` (nibabel imports pydicom and Pillow when they are "
        f"installed, as they are here): {cold['import_both']:.2f} s; runs: "
        f"{_runs(runs['import_both'])}",
        f"  with torch and nibabel already imported (a napari session, or a second command in "
        f"one process): first slice {paid:.2f} s after the command starts; runs: "
        f"{_runs(paid_runs)}",
        f"  target: first slice < {TARGET_FIRST_SLICE_S:.0f} s: {met}",
        f"whole volume ({vol['slices']} slices over {vol['views']} views, flip averaging "
        f"{'on' if vol['flip_tta'] else 'off'}): pipeline {vol['pipeline']:.2f} s/volume, "
        f"the networks alone on prepared batches {vol['networks']:.2f} s, "
        f"overhead {100 * overhead:+.1f}% (post-processing {vol['post']:.2f} s of it)",
    ]
