"""Start an engine job in a napari thread worker, with progress, Cancel and notifications.

The job runs in a napari ``FunctionWorker`` (``napari.qt.threading.create_worker``), and every
message to the GUI thread travels on the worker's own signals:

- progress: the engine reports through plain callbacks in the worker thread, from inside one
  blocking call, so the job cannot yield it. The callback emits the worker's ``progressed``
  signal. The signals object was made in the GUI thread, so Qt queues a signal emitted in the
  worker thread to the slots connected here and runs them in the GUI thread, as superqt
  delivers ``returned`` and ``warned``: widgets and napari's progress bar are only touched there;
- warnings raised in the job (``warnings.warn``): ``warned``, shown as napari warnings;
- failures: ``errored``. An :class:`InputError` is shown as its one sentence, a
  :class:`CancelledError` as information, anything else (a bug) as napari shows an uncaught
  error: a notification with its traceback.

Not a generator worker: superqt's GeneratorWorker takes a RuntimeError raised by the generator
for "worker deleted" and ends without ``errored`` or ``finished``, and torch raises RuntimeError
(so does a cancel, CancelledError): the widget would wait forever.

Cancel sets a flag the engine polls, not the worker's ``quit()``: superqt drops the return value
of a worker asked to quit, and a stopped fine-tuning run returns its best checkpoint. A quit
from napari itself (its activity panel) is polled as well, and reported as a cancel.

Torch threads: the engine runs with one torch thread fewer than the machine's cores (restored
when the last job ends). Torch's threads otherwise take every core, and Qt's event loop and
rendering then wait for a time slice: on a 2-core laptop the viewer stalled for over half a
second at a time during a segmentation or a fine-tuning run. Garbage collections in the
worker stop the GUI thread too: a job starts with ``gc.freeze()`` (see ``Job``).

Closing the viewer: :func:`cancel_jobs_on_close` raises every running job's stop flag when the
viewer's window closes and waits up to 2 s for them to stop, so no engine thread is left
writing into a run folder (a fine-tuning run keeps its best checkpoint: its writes are atomic);
what the jobs report after that may meet widgets the window deleted, and is then dropped.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, WorkerBaseSignals, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import notification_manager, show_error, show_info
from qtpy.QtCore import QEvent, QObject, Signal

from ..errors import CancelledError, InputError
from ._status import for_the_gui

log = logging.getLogger(__name__)


class EngineSignals(WorkerBaseSignals):
    progressed = Signal(object)  # an engine progress event, emitted in the worker thread


class EngineWorker(FunctionWorker):
    """napari's FunctionWorker with a ``progressed`` signal for the engine's callbacks."""

    def __init__(self, func, *args, **kwargs):
        super().__init__(func, *args, **kwargs)
        self.signals = EngineSignals()  # superqt's FunctionWorker takes no signals class


RUNNING: set[Job] = set()  # the jobs whose engine call has not returned yet
_threads_lock = threading.Lock()
_threads_state = {"jobs": 0, "saved": None}


def engine_threads(cores: int | None = None) -> int:
    """Torch threads for an engine job: one fewer than the cores, leaving one to Qt."""
    return max(1, (cores or os.cpu_count() or 1) - 1)


def _enter_engine_threads() -> None:
    import torch

    with _threads_lock:
        if _threads_state["jobs"] == 0:
            _threads_state["saved"] = torch.get_num_threads()
            torch.set_num_threads(min(_threads_state["saved"], engine_threads()))
        _threads_state["jobs"] += 1


def _leave_engine_threads() -> None:
    import torch

    with _threads_lock:
        _threads_state["jobs"] -= 1
        if _threads_state["jobs"] == 0 and _threads_state["saved"]:
            torch.set_num_threads(_threads_state["saved"])


def cancel_running_jobs(wait_s: float = 2.0) -> bool:
    """Raise every running job's stop flag and wait up to ``wait_s`` for their engine calls to
    return; True when all did."""
    jobs = list(RUNNING)
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + wait_s
    return all(job.engine_done.wait(max(0.0, deadline - time.monotonic())) for job in jobs)


class _CloseWatcher(QObject):
    """Cancels the running jobs when the window it watches closes."""

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close and RUNNING:
            for job in list(RUNNING):
                job.leave_widgets()
            stopped = cancel_running_jobs()
            log.info("viewer closed: running jobs %s", "stopped" if stopped else "still stopping")
        return False


def cancel_jobs_on_close(viewer) -> None:
    """Once per viewer: closing its window cancels the running jobs (see the module docstring)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # a plugin gets napari's PublicOnlyProxy
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    window = getattr(window, "__wrapped__", window)
    if window is None or getattr(window, "_la_dinov2_close_watcher", None) is not None:
        return
    watcher = _CloseWatcher(window)
    window.installEventFilter(watcher)
    window._la_dinov2_close_watcher = watcher


class Job:
    """One running engine call. ``job(report, stop)`` runs in a worker thread.

    ``report(event)`` may be called from the worker with any object; ``on_event(event)`` then
    runs in the GUI thread. Events that are dicts with ``done`` and ``total`` move napari's
    progress bar. ``stop()`` is the flag the engine polls (any engine ``cancel``/``stop``
    argument takes it); :meth:`cancel` raises it.
    """

    def __init__(
        self,
        job: Callable[[Callable[[Any], None], Callable[[], bool]], Any],
        *,
        description: str,
        on_event: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ):
        self.description = description
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self._cancel = threading.Event()
        self.engine_done = threading.Event()  # set in the worker thread when the call returns
        self._returned = False
        self._window_closed = False  # its widgets may be deleted: see _to_widgets
        self._on_event, self._on_done = on_event, on_done
        self._on_failed, self._on_finished = on_failed, on_finished
        self._progress = napari_progress(total=0, desc=description)
        self.worker = create_worker(
            self._work,
            job,
            _worker_class=EngineWorker,
            _connect={
                "progressed": self._handle_event,
                "warned": self._handle_warning,
                "returned": self._handle_returned,
                "errored": self._handle_error,
                "finished": self._handle_finished,
            },
            _start_thread=False,  # _work reads self.worker: start once it is set
        )
        RUNNING.add(self)
        # A full garbage collection stops every thread, the GUI's too, for as long as it walks
        # the heap (napari's objects: up to a second): while jobs run, the objects alive now
        # (napari, Qt, the modules) are moved out of its reach; what the job makes is still
        # collected. They are handed back to the collector when the last job finishes.
        gc.freeze()
        self.worker.start()

    def _work(self, job):
        """The worker's function (in its thread): the engine call, reporting on ``progressed``,
        with one torch thread fewer than the cores (see the module docstring)."""
        _enter_engine_threads()
        try:
            return job(self.worker.progressed.emit, self.stop)
        finally:
            _leave_engine_threads()
            RUNNING.discard(self)
            self.engine_done.set()

    def stop(self) -> bool:
        """Whether the job should stop: Cancel was pressed, or napari asked the worker to quit."""
        return self._cancel.is_set() or self.worker.abort_requested

    @property
    def running(self) -> bool:
        return not self.finished

    def cancel(self) -> None:
        self._cancel.set()

    def leave_widgets(self) -> None:
        """The viewer's window is closing: see :meth:`_to_widgets`."""
        self._window_closed = True

    def _to_widgets(self, callback, *args) -> None:
        """Call a widget's callback. Once the viewer's window closed, a callback that meets one
        of its deleted Qt objects is dropped: a step's loss arriving after the close met the
        plot's deleted timer, and the error in the Qt slot aborted the process."""
        if callback is None:
            return
        try:
            callback(*args)
        except RuntimeError as error:
            if not (self._window_closed and "has been deleted" in str(error)):
                raise
            log.debug("%s: the viewer closed, a late update dropped (%s)", self.description, error)

    def set_progress(self, done: int, total: int) -> None:
        """Move napari's progress bar forward (GUI thread only)."""
        if self._progress.total != total:
            self._progress.total = total
        # napari's bar runs the Qt event loop when it moves (processEvents), so later events
        # can be handled inside this call: an older count arriving after must not move it back.
        if done > self._progress.n:
            self._progress.update(done - self._progress.n)

    def _handle_event(self, event: Any) -> None:
        # The widget first, then the bar: moving the bar may handle the next events (above).
        self._to_widgets(self._on_event, event)
        if isinstance(event, dict) and "done" in event and "total" in event:
            self.set_progress(event["done"], event["total"])

    def _handle_warning(self, showwarning_args: tuple) -> None:
        notification_manager.receive_warning(*showwarning_args)  # as napari shows warnings

    def _handle_returned(self, value: Any) -> None:
        self._returned, self.result = True, value
        self._to_widgets(self._on_done, value)

    def _handle_error(self, error: BaseException) -> None:
        self.error = error
        if isinstance(error, CancelledError):
            show_info(f"{self.description}: cancelled ({error}).")
        elif isinstance(error, InputError):  # in the docks' words, not the command line's
            show_error(f"{self.description}: {for_the_gui(str(error))}")
        else:  # a bug: shown as napari shows an uncaught error, with its traceback; and logged
            log.error("%s failed", self.description, exc_info=error)
            notification_manager.receive_error(type(error), error, error.__traceback__)
        self._to_widgets(self._on_failed, error)

    def _handle_finished(self) -> None:
        self.finished = True
        if not RUNNING:  # no job left: the frozen objects may be collected again
            gc.unfreeze()
        self._progress.close()
        if not self._returned and self.error is None:  # napari's quit: superqt drops the value
            self.error = CancelledError("stopped before the end")
            show_info(f"{self.description}: cancelled.")
        self._to_widgets(self._on_finished)
