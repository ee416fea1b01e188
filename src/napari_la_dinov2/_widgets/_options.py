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
