#!/usr/bin/env python
"""Accuracy of the embedded default model on other voxel sizes and intensity ranges.

Not a test: it prints figures (and with ``--out`` writes them, the command on top). The LA 2018
cases are all 0.625 x 0.625 x 1.25 mm with 8-bit intensities; scanners give 0.6-1.4 mm in-plane,
1.25-2.5 mm slices and raw 12-bit values. Each of the default model's 8 test patients
(training/default_model/results/split.json "test", never seen in training or selection) is
resampled to each grid below with ``napari_la_dinov2.grid.resample`` (images cubic, the expert
masks linear as float then > 0.5, both over the same field of view with the affine updated), and
segmented through the engine's entry (``SegmentationEngine.segment``) exactly as ``la-dinov2
segment`` does. Dice is against the resampled expert mask; s/volume is that call (prediction,
then the measures and checks every front end gets; not the resampling).

    python benchmarks/resolution.py [--threads 2] [--device cpu] [--out results.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_la_dinov2.grid import acquisition_axes, resample
from napari_la_dinov2.scoring.metrics import dice
from napari_la_dinov2.segmentation import InferenceSettings, SegmentationEngine
from napari_la_dinov2.volume_files import VolumeMeta, read_volume

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "training" / "default_model" / "results" / "split.json"
# name -> voxel size in mm in the acquisition's order (in-plane 1, in-plane 2, through-plane),
# or None for the native grid; the last one keeps the grid but changes the intensities.
GRIDS = {
    "native 0.625 x 0.625 x 1.25": None,
    "1.25 in-plane (1.25 x 1.25 x 1.25)": (1.25, 1.25, 1.25),
    "2.5 mm slices (0.625 x 0.625 x 2.5)": (0.625, 0.625, 2.5),
    "1.0 isotropic": (1.0, 1.0, 1.0),
    "1.25 x 1.25 x 2.5": (1.25, 1.25, 2.5),
    "0.5 in-plane (0.5 x 0.5 x 1.25)": (0.5, 0.5, 1.25),
    "native grid, raw-looking int16": None,
}
RAW = "native grid, raw-looking int16"


def data_dir() -> Path:
    folder = Path(os.environ.get("LA2018_DIR", ROOT.parent / "shared" / "data" / "la2018"))
    if not (folder / "images").is_dir():
        sys.exit(f"LA 2018 data not found at {folder}; set LA2018_DIR.")
    return folder


def raw_looking(image: np.ndarray) -> np.ndarray:
    """8-bit levels as a scanner's int16 export might hold them: a gain and an offset (the
    values of a magnitude image run to about 1800 here, not 255)."""
    return np.round(image.astype(np.float64) * 7.1 + 23.0).astype(np.int16)


def variant(name, image, mask, meta):
    """(image, expert mask, meta) of one grid."""
    if name == RAW:
        return raw_looking(image), mask, meta
    if GRIDS[name] is None:
        return image, mask, meta
    spacing = np.empty(3)
    spacing[list(acquisition_axes(meta.through_plane_axis()))] = GRIDS[name]
    new_image, affine = resample(image, meta.affine, spacing, order=3)
    new_mask, _ = resample(mask, meta.affine, spacing, order=1)
    new_meta = VolumeMeta(affine=affine, shape=new_image.shape)
    return new_image, (new_mask > 0.5).astype(np.uint8), new_meta


def machine_lines(args, device) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"
    return [
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device "
        f"{device}, fp32 on CPU (bf16 autocast on CUDA), batch {args.batch_size}, flips as the "
        "model recommends (off)",
        f"load average (1, 5, 15 min) at start: {load}",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = data_dir()
    cases = json.loads(SPLIT.read_text())["test"]
    engine = SegmentationEngine(
        InferenceSettings(model="default", device=args.device, batch_size=args.batch_size)
    )
    lines = [
        "napari-la-dinov2 resolution benchmark: the default model on resampled LA 2018 cases",
        "command: python benchmarks/resolution.py " + " ".join(argv or sys.argv[1:]),
        *machine_lines(args, engine.device),
        f"cases: the default model's {len(cases)} test patients ({SPLIT.relative_to(ROOT)})",
        "",
    ]
    print("\n".join(lines), flush=True)
    say = lambda text: (lines.append(text), print(text, flush=True))  # noqa: E731
    scores = {name: [] for name in GRIDS}
    seconds = {name: [] for name in GRIDS}
    shapes = {name: None for name in GRIDS}
    for case in cases:
        image, meta = read_volume(folder / "images" / f"{case}.nii.gz")
        mask, _ = read_volume(folder / "labels" / f"{case}.nii.gz")
        for name in GRIDS:
            volume, truth, grid_meta = variant(name, image, mask, meta)
            start = time.perf_counter()
            labels = engine.segment(volume, grid_meta).labels
            seconds[name].append(time.perf_counter() - start)
            scores[name].append(dice(labels, truth))
            shapes[name] = volume.shape
            say(
                f"  {case} {name}: Dice {scores[name][-1]:.4f} shape {volume.shape} "
                f"{seconds[name][-1]:.1f} s"
            )
    native = float(np.mean(scores["native 0.625 x 0.625 x 1.25"]))
    table = [
        "",
        "| grid | shape (last case) | Dice (mean ± SD) | vs native | s/volume |",
        "|---|---|---|---|---|",
    ]
    for name in GRIDS:
        mean, sd = float(np.mean(scores[name])), float(np.std(scores[name]))
        shape = " x ".join(map(str, shapes[name]))
        table.append(
            f"| {name} | {shape} | {mean:.4f} ± {sd:.4f} | {mean - native:+.4f} | "
            f"{np.mean(seconds[name]):.1f} |"
        )
    for text in table:
        say(text)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
