"""``la-dinov2 segment``'s cold start before and after a change, measured in one run.

One fresh process per source tree (the revision given with ``--before``, exported from git into
a temporary folder, and this checkout), alternating round by round so both see the same machine
load. Each runs ``la-dinov2 segment`` with the default model on a real case, timed as
``speed_default.py`` times it: from just before the spawn to the end of the first batch of
slices (``first_slice``) and to the process's end (``total``: the whole volume, its measures and
the written mask). Each round also times ``load_model("default")`` alone in a process that has
loaded it once already (``load_model``: the best of 5), which the first two figures include.

    python benchmarks/revision_cold_start.py --before main --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision_speed import DATA, REPO, export  # noqa: E402 (this folder's sibling modules)
from speed_default import _CHILD  # noqa: E402


def spawn(tree: Path, case: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "light", str(case), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    return {"first_slice": marks["first_slice"] - start, "total": time.time() - start}


# Loading the default model again in a warm process: the best of 5, in seconds.
_LOAD_CHILD = r"""
import time
from napari_la_dinov2.models import load_model
load_model("default")
times = []
for _ in range(5):
    start = time.perf_counter()
    load_model("default")
    times.append(time.perf_counter() - start)
print(min(times))
"""


def spawn_load(tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision (e.g. main)")
    parser.add_argument("--case", default="06SR5RBREL16DQ6M8LWS", help="an LA 2018 case id")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    case = DATA / "images" / f"{args.case}.nii.gz"
    print(f"case {args.case}; {args.rounds} rounds; load average at start {os.getloadavg()}")
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as folder:
        trees = {"before": export(args.before, Path(folder)), "after": REPO}
        for round_ in range(args.rounds):
            for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                result = spawn(trees[name], case, Path(folder) / f"{name}.nii.gz")
                runs[name].append({**result, "load_model": spawn_load(trees[name])})
                print(f"round {round_ + 1} {name:6s}: {runs[name][-1]}", flush=True)
    for name, results in runs.items():
        best = {key: min(r[key] for r in results) for key in results[0]}
        print(
            f"{name}: best first slice {best['first_slice']:.2f} s, "
            f"best whole segment {best['total']:.2f} s, "
            f"load_model('default') again {best['load_model']:.3f} s"
        )
    print(f"load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
