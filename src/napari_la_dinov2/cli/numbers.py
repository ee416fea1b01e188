"""Numeric command-line options bounded when they are parsed: a number a careless script passes
(a seed of -5, 10^9 bootstrap resamples) is refused in one sentence before any work, instead of
reaching numpy as a traceback or a 45 GiB allocation."""

from __future__ import annotations

import argparse


def bounded_int(low: int, high: int | None = None):
    """An argparse ``type``: an integer from ``low`` to ``high`` (inclusive)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


# numpy's default_rng takes seeds of 0 and up; 2^32 - 1 covers every seed anyone types.
SEED = bounded_int(0, 2**32 - 1)
