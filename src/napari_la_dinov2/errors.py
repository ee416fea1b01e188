"""Errors that mean "the user gave us something we cannot use".

The command line turns an :class:`InputError` into one line on stderr and exit
status 2; the napari widgets turn it into a notification. Anything else is a bug
(exit status 1, traceback).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message is one sentence that says what is wrong and what to do."""


class CancelledError(RuntimeError):
    """A long job was stopped by its cancel flag."""


def is_cancelled(cancel) -> bool:
    """Whether a job's cancel flag is up: ``None`` (never), a ``threading.Event`` or any
    callable returning a truth value (e.g. a napari worker's ``abort_requested``)."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def raise_if_cancelled(cancel, what: str) -> None:
    """Raise :class:`CancelledError` ("stopped <what>") when the flag is up."""
    if is_cancelled(cancel):
        raise CancelledError(f"stopped {what}")
