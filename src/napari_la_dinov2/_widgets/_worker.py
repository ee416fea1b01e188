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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, WorkerBaseSignals, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import notification_manager, show_error, show_info
from qtpy.QtCore import Signal

from ..errors import CancelledError, InputError

log = logging.getLogger(__name__)


class EngineSignals(WorkerBaseSignals):
    progressed = Signal(object)  # an engine progress event, emitted in the worker thread


class EngineWorker(FunctionWorker):
    """napari's FunctionWorker with a ``progressed`` signal for the engine's callbacks."""

    def __init__(self, func, *args, **kwargs):
        super().__init__(func, *args, **kwargs)
        self.signals = EngineSignals()  # superqt's FunctionWorker takes no signals class


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
        self._returned = False
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
        self.worker.start()

    def _work(self, job):
        """The worker's function (in its thread): the engine call, reporting on ``progressed``."""
        return job(self.worker.progressed.emit, self.stop)

    def stop(self) -> bool:
        """Whether the job should stop: Cancel was pressed, or napari asked the worker to quit."""
        return self._cancel.is_set() or self.worker.abort_requested

    @property
    def running(self) -> bool:
        return not self.finished

    def cancel(self) -> None:
        self._cancel.set()

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
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, dict) and "done" in event and "total" in event:
            self.set_progress(event["done"], event["total"])

    def _handle_warning(self, showwarning_args: tuple) -> None:
        notification_manager.receive_warning(*showwarning_args)  # as napari shows warnings

    def _handle_returned(self, value: Any) -> None:
        self._returned, self.result = True, value
        if self._on_done is not None:
            self._on_done(value)

    def _handle_error(self, error: BaseException) -> None:
        self.error = error
        if isinstance(error, CancelledError):
            show_info(f"{self.description}: cancelled ({error}).")
        elif isinstance(error, InputError):
            show_error(f"{self.description}: {error}")
        else:  # a bug: shown as napari shows an uncaught error, with its traceback; and logged
            log.error("%s failed", self.description, exc_info=error)
            notification_manager.receive_error(type(error), error, error.__traceback__)
        if self._on_failed is not None:
            self._on_failed(error)

    def _handle_finished(self) -> None:
        self.finished = True
        self._progress.close()
        if not self._returned and self.error is None:  # napari's quit: superqt drops the value
            self.error = CancelledError("stopped before the end")
            show_info(f"{self.description}: cancelled.")
        if self._on_finished is not None:
            self._on_finished()
