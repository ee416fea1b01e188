"""Folding rarely changed options away, so that several docks fit one screen (superqt's
QCollapsible, which napari itself depends on)."""

from __future__ import annotations

from superqt import QCollapsible


def collapsible(container, inner, title: str, *, at: int, expanded: bool = False):
    """Put the magicgui Container ``inner`` in a folded section titled ``title`` at row ``at``
    of ``container``'s layout; returns the QCollapsible."""
    section = QCollapsible(title)
    section.setContentsMargins(0, 0, 0, 0)
    inner.margins = (0, 0, 0, 0)
    section.addWidget(inner.native)
    container.native.layout().insertWidget(at, section)
    container._la_dinov2_sections = [*getattr(container, "_la_dinov2_sections", []), inner]
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return section


class ScrollingDock:
    """Mixin for a ``Container(scrollable=True)`` that napari docks: napari docks ``native``,
    which for magicgui's scrollable container is the widget inside the scroll area, so the
    scrolling would be lost; here ``native`` is the scroll area itself."""

    @property
    def native(self):
        return self.root_native_widget

    @property
    def inner(self):
        """The widget that holds the layout, inside the scroll area."""
        return self.root_native_widget.widget()


def status_line(label) -> None:
    """A magicgui Label as a dock's status line: wrapped, left-aligned, at the dock's full
    width. A wrapped QLabel otherwise keeps about half of it, so a long status took five lines
    and Segment and Fine-tune docked together grew past a 1000-pixel-high screen."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
