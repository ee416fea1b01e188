"""The default model's speed before and after a change, as ratios measured in one run.

Each round runs one fresh process per source tree (the revision given with ``--before``,
exported from git into a temporary folder, and this checkout), alternating, so the two see the
same machine load. Each process loads the embedded default model, segments one real case
(after a warm-up) and reports the best of ``--repeats`` timings of:

- the pipeline: ``Predictor(load_model("default")).predict(volume, meta)``, the same public
  call in every revision (intensity statistics, slicing, resizing, the three networks, resizing
  back, threshold, post-processing). It builds the Predictor itself, not through the engine's
  entry (``segmentation.SegmentationEngine``), on purpose: older revisions have no such entry,
  and the entry's measures and checks are not the engine speed compared here;
- the networks alone: the three members on random inputs of the very batches the pipeline
  feeds them (the same shapes), so the overhead of the pipeline over its networks can be told.

    python benchmarks/revision_speed.py --before ff83d65 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LA2018_DIR", REPO.parent / "shared" / "data" / "la2018"))

_CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from napari_la_dinov2.inference import Predictor
try:
    from napari_la_dinov2.volume_files import read_volume
except ImportError:  # revisions before io.py was renamed volume_files.py
    from napari_la_dinov2.io import read_volume
from napari_la_dinov2.models import load_model

volume, meta = read_volume(sys.argv[1])
repeats = int(sys.argv[2])
model = load_model("default")
predictor = Predictor(model, device="cpu", batch_size=8)
members = list(model.net.members)
axis = meta.through_plane_axis()
others = [a for a in range(3) if a != axis]
sizes = [volume.shape[axis], volume.shape[others[0]], volume.shape[others[1]]]  # per view
batches = [[torch.randn(min(8, n - i), 3, 192, 192) for i in range(0, n, 8)] for n in sizes]

def networks():
    with torch.inference_mode():
        for net, view in zip(members, batches):
            for batch in view:
                net(batch)

def best(run):
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return min(times)

predictor.predict(volume, meta)  # warm-up
networks()
print(json.dumps({"pipeline": best(lambda: predictor.predict(volume, meta)),
                  "networks": best(networks), "slices": sum(sizes)}))
"""


def measure(tree: Path, case: Path, repeats: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(case), str(repeats), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(revision: str, folder: Path) -> Path:
    """The revision's files (``git archive``), without touching this checkout."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision (e.g. a commit)")
    parser.add_argument("--case", default="06SR5RBREL16DQ6M8LWS", help="an LA 2018 case id")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the output here")
    args = parser.parse_args(argv)
    case = DATA / "images" / f"{args.case}.nii.gz"
    lines = [
        f"# benchmarks/revision_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} torch threads; load average at start {os.getloadavg()}",
        f"case {args.case}; best of {args.repeats} per process, {args.rounds} rounds alternating",
    ]
    print("\n".join(lines), flush=True)
    results = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as folder:
        trees = {"before": export(args.before, Path(folder)), "after": REPO}
        started = time.perf_counter()
        for round_ in range(args.rounds):
            for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                result = measure(trees[name], case, args.repeats, args.threads)
                results[name].append(result)
                lines.append(
                    f"round {round_ + 1} {name:6s}: pipeline {result['pipeline']:.2f} s, "
                    f"networks {result['networks']:.2f} s"
                )
                print(lines[-1], flush=True)
    best = {
        k: {m: min(r[m] for r in v) for m in ("pipeline", "networks")} for k, v in results.items()
    }
    for name in ("before", "after"):
        b = best[name]
        lines.append(
            f"{name} ({args.before if name == 'before' else 'this checkout'}): "
            f"{b['pipeline']:.2f} s/volume, networks {b['networks']:.2f} s, overhead "
            f"+{100 * (b['pipeline'] / b['networks'] - 1):.1f}%"
        )
    lines.append(
        f"after / before: s/volume {best['after']['pipeline'] / best['before']['pipeline']:.3f}, "
        f"overhead factor {(best['after']['pipeline'] / best['after']['networks']) / (best['before']['pipeline'] / best['before']['networks']):.3f}; "
        f"wall {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()}"
    )
    print("\n".join(lines[-3:]))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
