"""A correction session: clicks one after another on one mask, the user's own edits kept, undo.

The napari Correct dock and the ``refine`` command keep one :class:`ClickSession` per mask.
Each :meth:`apply` takes the mask as it is now: voxels that differ from what the session last
returned were edited by the user (the brush, the eraser) and are locked, so no later click
undoes them. :meth:`undo` takes the last click back, restoring its window as it was before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .clicks import Click
from .refiner import PreparedClicks, Refiner


@dataclass
class _Step:
    click: Click
    window: tuple[slice, slice, slice]
    before: np.ndarray  # the window's voxels before the click


@dataclass
class ClickSession:
    refiner: Refiner
    prepared: PreparedClicks
    steps: list[_Step] = field(default_factory=list)
    last: np.ndarray | None = None  # what the session last returned
    locked: np.ndarray | None = None  # voxels the user edited by hand

    @property
    def clicks(self) -> list[Click]:
        return [step.click for step in self.steps]

    def apply(self, click: Click, mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
        """The mask after ``click`` (a new array) and the window it may have changed."""
        mask = np.asarray(mask, dtype=np.uint8)
        self.prepared.check(mask, click)
        if self.locked is None:
            self.locked = np.zeros(mask.shape, bool)
        if self.last is not None:
            self.locked |= mask != self.last
        out = self.refiner.refine(self.prepared, mask, [*self.clicks, click], keep=self.locked)
        window = self.refiner.window(self.prepared, click)
        self.steps.append(_Step(click, window, mask[window].copy()))
        self.last = out
        return out, window

    def undo(self, mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]] | None:
        """``mask`` with the last click's window as it was before the click, or None when
        there is no click to take back. The user's edits since then stay locked."""
        if not self.steps:
            return None
        step = self.steps.pop()
        out = np.array(mask, dtype=np.uint8)
        if self.last is not None and self.locked is not None:
            self.locked |= out != self.last
        kept = self.locked[step.window] if self.locked is not None else False
        out[step.window] = np.where(kept, out[step.window], step.before)
        self.last = out
        return out, step.window
