"""Picking annotated cases in the viewer: (image, corrected mask) layer pairs or a case folder.

Shared by Fine-tune and Few-shot. The layers are copied into ``training.Case`` objects in the GUI
thread when a job starts, so painting during training changes nothing under the engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton, Select, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_error

from .._layer_geometry import PREDICTION_KEY, layer_volume, mask_of, unique_name
from ..errors import InputError


def model_mask_of(labels_layer, shape) -> np.ndarray | None:
    """The model's own mask a Segment layer keeps (before the brush), when it fits ``shape``."""
    kept = (getattr(labels_layer, "metadata", None) or {}).get(PREDICTION_KEY)
    if isinstance(kept, np.ndarray) and kept.shape == tuple(shape):
        return (kept != 0).astype(np.uint8)
    return None


def cases_from_layers(pairs, *, predictions: bool = False) -> list:
    """Training cases from (image layer, labels layer) pairs; any non-zero label is atrium.
    With ``predictions``, a mask made by Segment brings the model's own mask as the case's
    ``prediction``, so the slices the user corrected weigh more in training."""
    from ..training import Case

    cases, names = [], set()
    for image_layer, labels_layer in pairs:
        image, meta = layer_volume(image_layer)
        labels = mask_of(labels_layer, image_layer)  # the file's voxel order, as the image
        if labels.shape != image.shape:
            raise InputError(
                f"the labels layer '{labels_layer.name}' has shape {labels.shape} but the image "
                f"'{image_layer.name}' has {image.shape}; pick the mask made on that image."
            )
        name = unique_name(image_layer.name, names)
        names.add(name)
        prediction = model_mask_of(labels_layer, image.shape) if predictions else None
        labels = (labels != 0).astype(np.uint8)
        case = Case(name=name, image=image.copy(), labels=labels, meta=meta, prediction=prediction)
        cases.append(case)
    return cases


class CasePicker(Container):
    """Image + mask combos, an 'Add case' list, and an optional folder of cases."""

    def __init__(self, viewer, *, folder_label: str = "Or a case folder"):
        self.viewer = viewer
        self.pairs: list[tuple[Image, Labels]] = []
        # Layer pickers by annotation: napari keeps them in step with the layer list.
        self.image = create_widget(annotation=Image, label="Image")
        self.mask = create_widget(annotation=Labels, label="Corrected mask")
        self.add_case = PushButton(text="Add case")
        self.cases = Select(label="Cases", choices=self._case_choices)
        self.cases.native.setMaximumHeight(56)
        self.remove_case = PushButton(text="Remove selected")
        self.folder = FileEdit(label=folder_label, mode="d", value="")
        buttons = Container(
            widgets=[self.add_case, self.remove_case], layout="horizontal", labels=False
        )
        buttons.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[self.image, self.mask, self.cases, buttons, self.folder], labels=True
        )
        self.margins = (0, 0, 0, 0)
        self.add_case.changed.connect(self.add_pair)
        self.remove_case.changed.connect(self._remove_pairs)
        # Not a picker: a closed layer's cases are dropped from the list.
        viewer.layers.events.removed.connect(self._forget_removed)

    def _case_choices(self, _widget=None):
        return [(f"{img.name} + {lab.name}", i) for i, (img, lab) in enumerate(self.pairs)]

    def _forget_removed(self, event):
        self.pairs = [p for p in self.pairs if event.value not in p]
        self.cases.reset_choices()

    def add_pair(self, _=None):
        pair = (self.image.value, self.mask.value)
        if None in pair:
            show_error("choose an image and its corrected mask first.")
            return
        if pair not in self.pairs:
            self.pairs.append(pair)
        self.cases.reset_choices()

    def _remove_pairs(self, _=None):
        drop = set(self.cases.value)
        self.pairs = [p for i, p in enumerate(self.pairs) if i not in drop]
        self.cases.reset_choices()

    def chosen_pairs(self) -> list[tuple[Image, Labels]]:
        """The added pairs; if none was added and no folder chosen, the pair on screen."""
        if self.pairs:
            return list(self.pairs)
        if self.chosen_folder() is None and None not in (self.image.value, self.mask.value):
            return [(self.image.value, self.mask.value)]
        return []

    def chosen_folder(self) -> str | None:
        folder = str(self.folder.value)
        return folder if folder not in ("", ".") and Path(folder).is_dir() else None

    def collect(self, *, predictions: bool = False):
        """``(cases from layers, folder or None)``; InputError when nothing is chosen. The
        folder is read by the caller's worker (reading volumes is slow)."""
        cases = cases_from_layers(self.chosen_pairs(), predictions=predictions)
        folder = self.chosen_folder()
        if not cases and folder is None:
            raise InputError("add a case (image + corrected mask) or choose a case folder.")
        return cases, folder


def with_folder_cases(cases: list, folder) -> list:
    """The layer cases plus those read from ``folder`` (call it in the worker: reading is slow)."""
    if folder is None:
        return list(cases)
    from ..training import load_case_folder

    return list(cases) + load_case_folder(folder)
