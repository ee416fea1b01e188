"""A run's learning-rate schedule, and its position kept in ``last/`` beside the optimiser.

The schedule is torch's ``LambdaLR``: constant (the paper) or cosine to 0 over the run, one
step per optimiser step. Its state is its position (``last_epoch``, the steps taken) and the
base rates (the optimiser's ``initial_lr``, saved with the optimiser). ``last/scheduler.json``
holds its ``state_dict``; a resumed run rebuilds the schedule at the saved position
(``last_epoch`` at construction), so the rate of every later step is the one an unbroken run
would use, with no ``scheduler.step()`` before an ``optimizer.step()`` (which torch warns
about). A ``last/`` written before this file existed resumes at the epochs of its history.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SCHEDULE_FILE = "scheduler.json"


def make_schedule(optimizer, kind: str, total_steps: int, position: int = 0):
    """The schedule ``kind`` ("constant" or "cosine") over ``total_steps``, ``position`` steps
    in (0: a new run). A resumed position needs the optimiser's saved state loaded first."""
    if kind == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=position - 1)


def save_schedule(scheduler, directory: Path) -> None:
    """The schedule's ``state_dict`` as JSON (LambdaLR's holds numbers only: no pickle)."""
    (directory / SCHEDULE_FILE).write_text(json.dumps(scheduler.state_dict()))


def saved_position(directory: Path, default: int) -> int:
    """The steps the schedule of the run saved in ``directory`` had taken; ``default`` for a
    ``last/`` written before the schedule was saved."""
    path = directory / SCHEDULE_FILE
    if not path.is_file():
        return default
    return int(json.loads(path.read_text())["last_epoch"])
