"""The models a user can pick, shared by every widget of the session.

A checkpoint folder chosen in one widget, or written by a fine-tuning run, appears in the model
lists of all the others (``KNOWN_MODELS.changed``).
"""

from __future__ import annotations

import re
from pathlib import Path

from psygnal import Signal

from .._layer_geometry import unique_name
from ..models import ALIASES, list_models

UNTRAINED = " (untrained)"  # the mark of a registry name: a head no one has trained yet
# A run folder the widgets name by the time (finetune.default_run_dir): "finetune-20261203-071939".
TIMED_RUN = re.compile(r"^(?P<kind>[a-z-]+)-\d{8}-(?P<h>\d\d)(?P<m>\d\d)(?P<s>\d\d)$")


def checkpoint_label(path: Path) -> str:
    """A short label for a checkpoint folder: "finetune 07:19:39" for a widget's timed run's
    best/, else "<parent>/<folder>" (what tells two checkpoints apart is kept short)."""
    timed = TIMED_RUN.match(path.parent.name)
    if timed and path.name == "best":
        return f"{timed['kind']} {timed['h']}:{timed['m']}:{timed['s']}"
    return f"{path.parent.name}/{path.name}"


class KnownModels:
    """Ordered ``(label, source)`` pairs: shipped models (the embedded default), added
    checkpoints (the newest first), registry names marked "(untrained)"."""

    changed = Signal()

    def __init__(self):
        self._added: dict[str, str] = {}

    def choices(self, _widget=None) -> list[tuple[str, str]]:
        added = [(label, source) for label, source in reversed(self._added.items())]
        shipped = [(name, name) for name in ALIASES]
        untrained = [(name + UNTRAINED, name) for name in list_models()]
        return [*shipped, *added, *untrained]

    def label_of(self, source: str) -> str:
        for label, known in self.choices():
            if known == source:
                return label
        return str(source)

    def add(self, source: str | Path, label: str | None = None) -> str:
        """Add a checkpoint folder or hub repo id; returns its label in the model list: ``label``
        if given, else ``parent/folder`` of a folder or the repo id, made unique (``name (2)``)."""
        source = str(source)
        if source in self._added.values():
            return self.label_of(source)
        if label is None:
            path = Path(source)
            label = checkpoint_label(path) if path.is_dir() else source
        label = unique_name(label, {*self._added, *ALIASES, *list_models()})
        self._added[label] = source
        self.changed.emit()
        return label

    def reset(self) -> None:
        """Forget the added checkpoints (a fresh session's list)."""
        self._added.clear()
        self.changed.emit()


KNOWN_MODELS = KnownModels()


def device_choices() -> list[str]:
    """'auto', 'cpu' and the accelerators this machine has."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def refresh_in_order(combo) -> None:
    """Reload a magicgui ComboBox or Select from its choices, in their order, keeping its value.

    magicgui's reset_choices appends a new choice at the end of the list: a new checkpoint would
    land below the dozen registry names, out of sight."""
    value = combo.value
    with combo.changed.blocked():
        combo.native.clear()
        combo.reset_choices()
        sources = set(combo.choices)
        if isinstance(value, list | tuple):
            combo.value = [v for v in value if v in sources]
        elif value in sources:
            combo.value = value


def follow_known_models(combo) -> None:
    """Keep a magicgui ComboBox's choices in step with KNOWN_MODELS while its widget lives."""

    def refresh():
        try:
            refresh_in_order(combo)
        except RuntimeError:  # the Qt widget was deleted (viewer closed): stop following
            KNOWN_MODELS.changed.disconnect(refresh)

    KNOWN_MODELS.changed.connect(refresh)
    combo.native.destroyed.connect(lambda *_: KNOWN_MODELS.changed.disconnect(refresh))


# Rows a model list shows beyond the shipped and added models: a few registry names, so the
# user sees the list goes on.
EXTRA_MODEL_ROWS = 3


def size_model_list(select, *, most: int = 10) -> None:
    """A magicgui Select of models tall enough for the shipped and added (trained) models and a
    few registry names, growing as models are added; a selected model scrolled into view."""
    view = select.native

    def fit():
        try:
            rows = len(ALIASES) + len(KNOWN_MODELS._added) + EXTRA_MODEL_ROWS
            rows = max(4, min(most, rows, view.count()))
            height = view.sizeHintForRow(0) if view.count() else 18
            frame = 2 * view.frameWidth()
            view.setFixedHeight(max(height, 16) * rows + frame)
            show_selected()
        except RuntimeError:  # the Qt widget was deleted (viewer closed): stop following
            KNOWN_MODELS.changed.disconnect(fit)

    def show_selected(*_):
        selected = view.selectedItems()
        if selected:
            view.scrollToItem(selected[0])

    fit()
    KNOWN_MODELS.changed.connect(fit)
    view.destroyed.connect(lambda *_: KNOWN_MODELS.changed.disconnect(fit))
    select.changed.connect(show_selected)
