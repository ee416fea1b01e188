"""Start an engine job in a napari thread worker, with progress, Cancel and notifications.

The engine reports progress through plain callbacks in the worker thread; a Qt signal with a
queued connection carries each report to the GUI thread, where napari's progress bar and the
widget's own display are updated. Failures never escape as tracebacks: an InputError becomes its
one sentence in a notification, a cancel an information, anything else an error notification
(the traceback goes to the log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Qt, Signal

from ..errors import CancelledError, InputError

log = logging.getLogger(__name__)


class _Relay(QObject):
    """Lives in the GUI thread; signals emitted from the worker are delivered there."""

    event = Signal(object)


@dataclass
class _Failure:
    error: BaseException


def describe_error(error: BaseException) -> str:
    """The sentence a user sees for a failed job."""
    if isinstance(error, InputError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Job:
    """One running engine call. ``job(report, stop)`` runs in a worker thread.

    ``report(event)`` may be called from the worker with any object; ``on_event(event)`` then
    runs in the GUI thread. Events that are dicts with ``done`` and ``total`` move napari's
    progress bar. ``stop`` is the threading.Event the engine polls; :meth:`cancel` sets it.
    """

    def __init__(
        self,
        job: Callable[[Callable[[Any], None], threading.Event], Any],
        *,
        description: str,
        on_event: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ):
        self.description = description
        self.stop = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self._on_event, self._on_done = on_event, on_done
        self._on_failed, self._on_finished = on_failed, on_finished
        self._relay = _Relay()
        self._relay.event.connect(self._handle_event, Qt.ConnectionType.QueuedConnection)
        self._progress = napari_progress(total=0, desc=description)

        def guarded():
            try:
                return job(self._relay.event.emit, self.stop)
            except BaseException as error:  # handled in the GUI thread, see _handle_returned
                return _Failure(error)

        self.worker = create_worker(guarded, _start_thread=False)
        self.worker.returned.connect(self._handle_returned)
        self.worker.start()

    @property
    def running(self) -> bool:
        return not self.finished

    def cancel(self) -> None:
        self.stop.set()

    def set_progress(self, done: int, total: int) -> None:
        """Move napari's progress bar (GUI thread only)."""
        if self._progress.total != total:
            self._progress.total = total
        self._progress.update(done - self._progress.n)

    def _handle_event(self, event: Any) -> None:
        if isinstance(event, dict) and "done" in event and "total" in event:
            self.set_progress(event["done"], event["total"])
        if self._on_event is not None:
            self._on_event(event)

    def _handle_returned(self, value: Any) -> None:
        self._progress.close()
        self.finished = True
        try:
            if isinstance(value, _Failure):
                self.error = value.error
                if isinstance(value.error, CancelledError):
                    show_info(f"{self.description}: cancelled ({value.error}).")
                else:
                    if not isinstance(value.error, InputError):
                        log.error("%s failed", self.description, exc_info=value.error)
                    show_error(f"{self.description} failed: {describe_error(value.error)}")
                if self._on_failed is not None:
                    self._on_failed(value.error)
            else:
                self.result = value
                if self._on_done is not None:
                    self._on_done(value)
        except Exception as error:  # a display bug must not leave the widget stuck "running"
            log.exception("showing the result of %s failed", self.description)
            show_error(f"{self.description}: showing the result failed: {describe_error(error)}")
        finally:
            if self._on_finished is not None:
                self._on_finished()
