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
