"""The worker: what a user sees when an engine job reports, warns, fails or is cancelled."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from napari_la_dinov2._widgets._worker import Job
from napari_la_dinov2.errors import InputError, raise_if_cancelled

pytestmark = pytest.mark.gui


def _finish(qtbot, job: Job) -> Job:
    qtbot.waitUntil(lambda: job.finished, timeout=30_000)
    return job


def test_input_error_is_one_sentence_without_traceback(make_napari_viewer, qtbot, notifications):
    make_napari_viewer()
    sentence = "the file 'x.nii' is not a volume; open a NIfTI or NRRD file."

    def job(report, stop):
        raise InputError(sentence)

    failed = []
    job = _finish(qtbot, Job(job, description="Segmenting", on_failed=failed.append))
    assert notifications["error"] == [f"Segmenting: {sentence}"]
    assert notifications["traceback"] == []  # not napari's error-with-traceback notification
    assert isinstance(job.error, InputError) and failed == [job.error]


def test_a_bug_shows_with_its_traceback_and_the_job_ends(make_napari_viewer, qtbot, notifications):
    # torch raises RuntimeError; the job must still end (a generator worker would hang here).
    make_napari_viewer()

    def job(report, stop):
        raise RuntimeError("CUDA error: device-side assert triggered")

    job = _finish(qtbot, Job(job, description="Segmenting"))
    assert isinstance(job.error, RuntimeError)
    assert len(notifications["traceback"]) == 1
    assert "device-side assert" in notifications["error"][0]


def test_warning_in_the_job_is_a_napari_warning(make_napari_viewer, qtbot, notifications):
    make_napari_viewer()

    def job(report, stop):
        warnings.warn("'unet' has no trained segmentation weights", UserWarning, stacklevel=1)
        return 42

    job = _finish(qtbot, Job(job, description="Segmenting"))
    assert job.result == 42 and job.error is None
    assert notifications["warning"] == ["'unet' has no trained segmentation weights"]
    assert notifications["error"] == []


def test_progress_reaches_the_gui_thread(make_napari_viewer, qtbot):
    make_napari_viewer()
    seen = []

    def job(report, stop):
        for done in range(1, 4):
            report({"done": done, "total": 3})
        return "done"

    def on_event(event):
        seen.append((event["done"], threading.current_thread() is threading.main_thread()))

    job = _finish(qtbot, Job(job, description="Working", on_event=on_event))
    qtbot.waitUntil(lambda: len(seen) == 3, timeout=5_000)
    assert seen == [(1, True), (2, True), (3, True)]
    assert job.result == "done"


def test_cancel_stops_the_engine_and_informs(make_napari_viewer, qtbot, notifications):
    make_napari_viewer()
    started = threading.Event()

    def job(report, stop):
        started.set()
        for step in range(3000):  # ~30 s unless the flag is polled
            raise_if_cancelled(stop, f"after {step} steps")
            time.sleep(0.01)
        return "not cancelled"

    finished = []
    job = Job(job, description="Fine-tuning", on_finished=lambda: finished.append(True))
    assert started.wait(10)
    job.cancel()
    _finish(qtbot, job)
    assert job.result is None and finished == [True]
    assert len(notifications["info"]) == 1 and "cancelled" in notifications["info"][0]
    assert notifications["error"] == [] and notifications["traceback"] == []


def test_a_late_update_to_a_closed_viewers_dock_is_dropped(make_napari_viewer, qtbot):
    """A step that ends just after the close reports to a dock whose Qt objects the window
    deleted: the update is dropped (an error in a Qt slot aborts the process), the job ends."""
    from magicgui.widgets import Label

    from napari_la_dinov2._widgets._worker import cancel_jobs_on_close

    viewer = make_napari_viewer()
    status = Label(value="")
    viewer.window.add_dock_widget(status, name="Status")
    cancel_jobs_on_close(viewer)
    closing = threading.Event()

    def job(report, stop):
        closing.wait(10)
        time.sleep(0.5)  # the step ends after the close, its flag unseen
        report({"done": 1, "total": 2})
        return "late"

    def show(value):
        status.value = str(value)

    job = Job(job, description="Fine-tuning", on_event=show, on_done=show)
    closing.set()
    viewer.close()  # napari's close: its window's close event reaches the watcher
    _finish(qtbot, job)
    assert job.result == "late" and job.error is None


def test_napari_quit_is_a_cancel_too(make_napari_viewer, qtbot, notifications):
    make_napari_viewer()
    started = threading.Event()

    def job(report, stop):
        started.set()
        while not stop():
            time.sleep(0.01)
        return "stopped early"  # dropped by superqt after quit(): reported as a cancel

    job = Job(job, description="Few-shot")
    assert started.wait(10)
    job.worker.quit()
    _finish(qtbot, job)
    assert job.error is not None and "cancelled" in notifications["info"][0]


def test_an_engine_job_leaves_qt_a_core_and_gives_the_threads_back(make_napari_viewer, qtbot):
    """While a job runs, torch computes on fewer threads than it had (one core stays with Qt's
    event loop, so the viewer answers); when the job ends, torch has its threads back."""
    import os

    import torch

    make_napari_viewer()
    before = torch.get_num_threads()
    threads = max(os.cpu_count() or 1, 2)  # as torch starts: a thread per core
    torch.set_num_threads(threads)
    try:
        seen = []
        job = Job(lambda report, stop: seen.append(torch.get_num_threads()), description="Job")
        _finish(qtbot, job)
        assert job.engine_done.is_set() and seen and 1 <= seen[0] < threads
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
