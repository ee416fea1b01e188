"""The status lines a segmentation writes, shared by Segment and Fine-tune's "Segment with it"."""

from __future__ import annotations

from ..measures import LAMeasures


def measures_text(measures: LAMeasures | None) -> str:
    """The status line's summary of the LA measures."""
    if measures is None:
        return "empty mask"
    return (
        f"{measures.volume_ml:.1f} mL, {measures.surface_area_cm2:.1f} cm², "
        f"sphericity {measures.sphericity:.2f}, max diameter {measures.max_diameter_mm:.1f} mm"
    )


def progress_text(label: str, event) -> str | None:
    """'segmenting with <model>: 40% (158/395 2D slices, ...)' from an engine progress event.
    A model of several views (the default ensemble: axial, coronal, sagittal) counts the
    slices of every view, so the count can exceed the volume's slices: the line says so."""
    if not (isinstance(event, dict) and event.get("total")):
        return None
    percent = 100 * event["done"] // event["total"]
    return (
        f"segmenting with {label}: {percent}% ({event['done']}/{event['total']} 2D slices, "
        "every view of the model counted)"
    )
