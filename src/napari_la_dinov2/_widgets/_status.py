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


# The engine's sentences are written for the command line; in napari a flag means nothing.
# Each pattern (a regular expression on the engine's words) -> what to do in the docks.
GUI_WORDING = [
    (
        r"pass --resume to continue it, --overwrite to replace it, or choose another folder\.",
        "choose another 'Output folder' (each dock proposes a new one after a run).",
    ),
    (
        r"--resume continues a run and --overwrite replaces it; give one\.",
        "choose another 'Output folder'.",
    ),
    (r"start without --resume \(or with --overwrite\)\.", "choose another 'Output folder'."),
    (
        r"choose another name or pass --overwrite\.",
        "choose another name, or tick 'Replace an existing file' where the dock has it.",
    ),
    (r"choose another output folder or pass --overwrite\.", "choose another output folder."),
    (r", or give a local folder with --backbone-source \(", " ("),
    (
        r"pass --backbone-source with that name if you trust it\.",
        "napari loads only official backbones; load it with the la-dinov2 command line if you "
        "trust it.",
    ),
]


def for_the_gui(message: str) -> str:
    """``message`` with the command line's flags replaced by what to do in the docks."""
    import re

    for pattern, replacement in GUI_WORDING:
        message = re.sub(pattern, replacement, message)
    return message


def failure_text(error: BaseException) -> str:
    """The status line of a job that failed: the whole first line of the error (the label wraps
    it), in the docks' words; the notification has the same, a bug's traceback too."""
    return "failed: " + for_the_gui(str(error).split("\n")[0])
