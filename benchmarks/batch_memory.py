#!/usr/bin/env python
"""Memory of a batch run: does the process grow from case to case?

Not a test: it prints figures. It runs the engine of ``la-dinov2 segment IN_DIR --out OUT_DIR``
(:func:`napari_la_dinov2.scan_folder.segment_cases`: read, segment, measure with a mesh, write the mask
and stats.csv) with the embedded default model, loaded once, over real LA 2018 cases in one
process, and prints after chosen cases the peak RSS so far (``resource.getrusage``: the kernel's
high-water mark, so a leak or a growing cache would show as a rising peak) and the current RSS
(psutil, when installed). Flat memory means the peak after case 20 equals the peak after case 1
or 10 give or take the largest case's own working set.

    python benchmarks/batch_memory.py                   # 20 cases, CPU
    python benchmarks/batch_memory.py --cases 5 --report 1 3 5 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from speed_measuring import cpu_model  # noqa: E402 (this folder is on the path of a script run from it)

from napari_la_dinov2.scan_folder import plan_folder, segment_cases  # noqa: E402
from napari_la_dinov2.segmentation import InferenceSettings, SegmentationEngine  # noqa: E402


def la2018_dir() -> Path | None:
    """$LA2018_DIR, else ../shared/data/la2018 beside the repository (as the tests look).
    Not imported from tests/conftest.py: that pins torch to one thread for tiny models."""
    for candidate in (os.environ.get("LA2018_DIR"), REPO_ROOT.parent / "shared/data/la2018"):
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def current_rss_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--report", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    data = la2018_dir()
    if data is None:
        sys.exit("real LA 2018 cases not found: set LA2018_DIR or place ../shared/data/la2018")
    ids = (data / "cases.txt").read_text().split()[: args.cases]
    print("napari-la-dinov2 batch memory benchmark")
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"settings: model default (embedded), device {args.device}, batch {args.batch_size}, "
        f"precision auto (fp32 on a CPU), {len(ids)} LA 2018 cases in one process, each read, segmented, measured "
        "(mesh) and written with stats.csv as `la-dinov2 segment IN_DIR --out OUT_DIR` does"
    )

    with tempfile.TemporaryDirectory() as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        for case in ids:  # links, not copies: the cases are read where they lie
            (in_dir / f"{case}.nii.gz").symlink_to(data / "images" / f"{case}.nii.gz")
        print(f"before the model: peak RSS {peak_rss_mb():.0f} MB")
        settings = InferenceSettings(device=args.device, batch_size=args.batch_size)
        engine = SegmentationEngine(settings)
        print(f"model loaded:     peak RSS {peak_rss_mb():.0f} MB")
        plan = plan_folder(in_dir, out_dir)
        start = time.perf_counter()
        for index, result in enumerate(segment_cases(plan, engine, "default"), start=1):
            if result.error is not None:
                print(f"case {index} ({result.name}) failed: {result.row['status']}")
            if index in args.report:
                now = current_rss_mb()
                print(
                    f"after case {index:2d}: peak RSS {peak_rss_mb():.0f} MB"
                    + (f", current RSS {now:.0f} MB" if now is not None else "")
                    + f"  ({time.perf_counter() - start:.0f} s so far; {result.name}, "
                    f"{result.row.get('volume_ml', '?')} mL)"
                )


if __name__ == "__main__":
    main()
