"""Measuring a responsive viewer: the Qt event-loop probe, the time from closing the viewer to
a stopped job, and the segment-then-fine-tune round both measure.

One copy for tests/gui/test_responsive.py and tests/gui/test_finetune_loop.py (which assert
behaviour with wide bounds: no freeze of several seconds, the job does stop) and for
benchmarks/responsiveness.py (which prints the figures the README quotes). Qt code: it lives
beside the GUI tests, never in the engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from qtpy.QtCore import QTimer

TICK_MS = 20


class EventLoopProbe:
    """A 20 ms QTimer that records the time of its ticks: a long gap is a frozen GUI (a
    QTimer fires once, late, after a stall: it does not queue the ticks it missed)."""

    def __init__(self):
        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def __enter__(self):
        self.times.append(time.perf_counter())
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.times.append(time.perf_counter())  # a stall at the very end counts too

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]

    @property
    def max_gap(self) -> float:
        return max(self.gaps, default=0.0)


def seconds_to_stop(close: Callable[[], None], done: threading.Event, limit_s: float) -> float:
    """Call ``close()`` (e.g. the viewer window's) and return the seconds until ``done`` was
    set, stamped by a thread that waits on it (``close`` may block, and goes on after the
    job stopped, tearing the viewer down); ``inf`` if it was not set within ``limit_s``."""
    stamped: list[float] = []
    watcher = threading.Thread(
        target=lambda: done.wait(limit_s) and stamped.append(time.perf_counter())
    )
    started = time.perf_counter()
    watcher.start()
    close()
    watcher.join(limit_s)
    return stamped[0] - started if stamped else float("inf")


def segment_then_finetune(
    segment, finetune, image, model: str, run_dir, wait_until, timeout_ms: int = 1_800_000
) -> dict:
    """Segment ``image`` with the Segment dock's model, then fine-tune ``model`` in the
    Fine-tune dock on the result (as a user who accepts the mask would), waiting up to
    ``timeout_ms`` for each with ``wait_until(predicate, timeout=ms)`` (qtbot's). Returns each
    job's (start, end) times. The wait is long: at the lowest priority behind a load of 12-14
    on 2 cores, six steps of the default model's quick round took over 10 minutes."""
    spans = {}
    started = time.perf_counter()  # before run(): a job run on the GUI thread shows as a gap
    job = segment.run()
    wait_until(lambda: job.finished, timeout=timeout_ms)
    if job.error is not None:
        raise RuntimeError(f"segmenting failed: {job.error}")
    spans["segment"] = (started, time.perf_counter())
    finetune.picker.image.value, finetune.picker.mask.value = image, segment.last_layer
    finetune.model.value, finetune.output.value = model, str(run_dir)
    started = time.perf_counter()
    job = finetune.run()
    wait_until(lambda: job.finished, timeout=timeout_ms)
    if job.error is not None:
        raise RuntimeError(f"fine-tuning failed: {job.error}")
    spans["finetune"] = (started, time.perf_counter())
    return spans
