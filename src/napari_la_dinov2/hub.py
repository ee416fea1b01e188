"""The Hugging Face hub, quietly and only where the user asked for it.

:func:`quiet_hub` silences huggingface_hub's retry warnings and progress bars (and
transformers' logs) for one call, so that without a network the user reads our one sentence,
not a dozen "Retrying in 8s" lines first. :func:`offline` says when to ask only the local
cache. :func:`is_official_backbone` says whether a repo id is one of the official DINOv2 repos,
the only ones a checkpoint may name by itself.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

# facebook/dinov2-{small,base,large,giant}, with or without registers (and nothing else).
_OFFICIAL_DINOV2 = re.compile(r"facebook/dinov2-(with-registers-)?(small|base|large|giant)")


def is_official_backbone(source: str) -> bool:
    return bool(_OFFICIAL_DINOV2.fullmatch(str(source)))


def offline() -> bool:
    """Whether to read the hub's files from the local cache only: when the hub's host name does
    not resolve, there is no network to wait for. huggingface_hub would otherwise retry five
    times with back-off (23 s measured) before falling back to the same cache."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return True
    return False


@contextmanager
def quiet_hub():
    """huggingface_hub (and transformers) at error verbosity with no progress bars, restored
    on exit. The retries still happen; only their noise is gone."""
    from huggingface_hub import logging as hub_logging
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    level, bars_off = hub_logging.get_verbosity(), are_progress_bars_disabled()
    restore_transformers = _quiet_transformers()
    hub_logging.set_verbosity_error()
    disable_progress_bars()
    try:
        yield
    finally:
        hub_logging.set_verbosity(level)
        if not bars_off:
            enable_progress_bars()
        restore_transformers()


def _quiet_transformers():
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return lambda: None
    level = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    return lambda: tf_logging.set_verbosity(level)
