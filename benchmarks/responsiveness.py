#!/usr/bin/env python
"""Does the viewer stay responsive while the engine works, and how soon does closing it stop a job?

Not a test: it prints figures (tests/gui/test_responsive.py and the viewer-close test assert the
behaviour with bounds a busy machine cannot fail). In a napari viewer, with the embedded default
model on a real LA 2018 case (the whole volume, as a user opens it):

1. the Segment dock segments it (with its doubt) and the Fine-tune dock runs a quick round on
   the mask, ``--rounds`` times, while a 20 ms QTimer probes the Qt event loop: the longest
   gap between its ticks, the 99th percentile and the gaps over 0.1 and 0.5 s;
2. a quick round is started and the viewer closed, once during its training steps and once
   during its validation: the seconds from the close to the engine's return.

Both figures stretch with other work on the machine, so it prints the load average at the start
and the end, the CPU, the cores, the threads and its own nice value (a lower priority than the
other work stretches them more). It needs a display:

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/responsiveness.py \\
        --out benchmarks/results/responsiveness-cpu.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(REPO_ROOT))  # tests.gui.responsiveness: the probe the tests use

import napari  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from batch_memory import la2018_dir  # noqa: E402 (this folder is on the path of a script run from it)
from qtpy.QtTest import QTest  # noqa: E402
from speed_measuring import cpu_model, load_average  # noqa: E402

from napari_la_dinov2 import read_labels, read_volume  # noqa: E402
from napari_la_dinov2._widgets._worker import engine_threads  # noqa: E402
from napari_la_dinov2._widgets.finetune import FinetuneWidget  # noqa: E402
from napari_la_dinov2._widgets.segment import SegmentWidget  # noqa: E402
from napari_la_dinov2.training.train_config import QUICK_ROUND  # noqa: E402
from tests.gui.conftest import add_case_layers  # noqa: E402
from tests.gui.responsiveness import (  # noqa: E402
    EventLoopProbe,
    seconds_to_stop,
    segment_then_finetune,
)

LINES: list[str] = []
JOB_TIMEOUT_MS = 3_600_000  # a starved benchmark is slow, not wrong: it reports the times


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def wait_until(predicate, timeout: int) -> None:
    """Run the Qt event loop until ``predicate()`` (qtbot.waitUntil's contract, in ms)."""
    deadline = time.monotonic() + timeout / 1000
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout / 1000:.0f} s")
        QTest.qWait(10)


def os_threads() -> str:
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(line.split()[1] for line in status if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return "unknown"


def open_case(case_dir: Path, name: str):
    """A new viewer with the case's image and expert mask, as File > Open shows them."""
    image, meta = read_volume(case_dir / "images" / f"{name}.nii.gz")
    labels = read_labels(case_dir / "labels" / f"{name}.nii.gz", meta).astype(np.uint8)
    viewer = napari.Viewer()
    image_layer, mask_layer = add_case_layers(viewer, (name, image, labels, meta))
    return viewer, image_layer, mask_layer


def gap_line(label: str, probe: EventLoopProbe, start: float, end: float) -> str:
    gaps = np.array([b - a for a, b in zip(probe.times, probe.times[1:]) if start < b <= end])
    gaps = gaps if gaps.size else np.zeros(1)
    return (
        f"{label:<24} {end - start:6.1f} s, {len(gaps):5d} ticks, longest gap {gaps.max():.3f} s, "
        f"99th percentile {np.percentile(gaps, 99):.3f} s, gaps > 0.1 s: {int((gaps > 0.1).sum())}, "
        f"> 0.5 s: {int((gaps > 0.5).sum())}"
    )


def probe_rounds(case_dir: Path, name: str, rounds: int, work: Path) -> tuple[float, str]:
    """Part 1; returns the longest gap of all rounds and the process's threads then."""
    viewer, image, _ = open_case(case_dir, name)
    segment, finetune = SegmentWidget(viewer), FinetuneWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    viewer.window.add_dock_widget(finetune, name="Fine-tune")
    segment.image.value = image
    segment.select_model("default")
    QTest.qWait(500)  # let the docks settle before measuring
    with EventLoopProbe() as probe:
        for index in range(1, rounds + 1):
            spans = segment_then_finetune(
                segment,
                finetune,
                image,
                "default",
                work / f"round{index}",
                wait_until,
                timeout_ms=JOB_TIMEOUT_MS,
            )
            for job, (start, end) in spans.items():
                say(gap_line(f"round {index}: {job}", probe, start, end))
    say(gap_line("all rounds", probe, probe.times[0], probe.times[-1]))
    threads = os_threads()
    viewer.close()
    return probe.max_gap, threads


def close_during_run(case_dir: Path, name: str, phase: str, work: Path) -> None:
    """Part 2: a quick round on the expert mask, the viewer closed in ``phase``."""
    viewer, image, mask = open_case(case_dir, name)
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune, name="Fine-tune")
    finetune.picker.image.value, finetune.picker.mask.value = image, mask
    finetune.model.value, finetune.output.value = "default", str(work / f"close-{phase}")
    QTest.qWait(500)
    job = finetune.run()
    steps = 1 if phase == "training" else QUICK_ROUND["steps_per_epoch"]
    wait_until(lambda: len(finetune.plot.losses) >= steps or job.finished, JOB_TIMEOUT_MS)
    QTest.qWait(300)  # into the next step, or into the validation
    steps_done = len(finetune.plot.losses)
    where = (
        "its validation"
        if steps_done >= QUICK_ROUND["steps_per_epoch"]
        else f"step {steps_done + 1}"
    )
    if job.engine_done.is_set():
        say(f"closing during its {phase}: the run had ended before the close; not measured")
        viewer.close()
        return
    seconds = seconds_to_stop(viewer.window._qt_window.close, job.engine_done, 120.0)
    say(f"closed during {where}: the engine returned {seconds:.2f} s after the close")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--case", help="LA 2018 case id (default: the first of cases.txt)")
    parser.add_argument("--rounds", type=int, default=2, help="0: only close during runs")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    case_dir = la2018_dir()
    if case_dir is None:
        sys.exit("the LA 2018 cases were not found: set LA2018_DIR")
    name = args.case or (case_dir / "cases.txt").read_text().split()[0]
    say(f"$ python benchmarks/responsiveness.py {' '.join(argv or sys.argv[1:])}".rstrip())
    say(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}; torch {torch.__version__}, the engine on {engine_threads()} "
        f"torch thread(s) (one core left to Qt); Qt platform {os.environ.get('QT_QPA_PLATFORM', '-')}"
    )
    say(f"load average at start: {load_average()}")
    say(f"case {name} (the whole volume), embedded default model, quick rounds")
    with tempfile.TemporaryDirectory() as tmp:
        if args.rounds:  # --rounds 0: only part 2, the close
            longest, threads = probe_rounds(case_dir, name, args.rounds, Path(tmp))
        for phase in ("training", "validation"):
            close_during_run(case_dir, name, phase, Path(tmp))
    if args.rounds:
        say(f"longest event-loop gap {longest:.3f} s; {threads} threads in the process")
    say(f"load average at end: {load_average()}; this process's nice value at the end {os.nice(0)}")
    if args.out:
        args.out.write_text("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
