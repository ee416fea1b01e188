"""The one door into the engine: settings in, a segmented, measured and checked atrium out.

Every front end (``la-dinov2 segment`` for one scan or a folder, the Segment and Compare docks,
the benchmarks) segments through :class:`SegmentationEngine`:

1. :class:`InferenceSettings` holds every inference choice in one typed, frozen object;
   :meth:`InferenceSettings.check` refuses a bad one before any model is loaded.
2. :class:`SegmentationEngine` loads the model once and builds the only :class:`Predictor` of
   a run; :meth:`SegmentationEngine.segment` takes a volume and a region (a box, a centre
   click, or neither: the whole volume) and returns a :class:`SegmentationResult`: the labels,
   the region used, the LA measures and plausibility warnings of
   :func:`~napari_la_dinov2.measures.measure_mask` (the border warning speaks of the region
   segmented, whichever door asked), and with doubt on, the doubt map and the slices to check.

The result also keeps the prepared volume and the probabilities, so that a refinement that
recomputes only some slices starts from the same state as the mask it refines.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .inference import Predictor, PreparedVolume, RegionOfInterest, autocast_dtype, resolve_device
from .measures import LAMeasures, measure_mask
from .volume_files import VolumeMeta

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DOUBTFUL_SLICES = 10  # how many of the most doubtful slices a result lists, most doubtful first


@dataclass(frozen=True)
class InferenceSettings:
    """Every choice of one segmentation run.

    ``model``: a registry name, ``"default"`` (the embedded model), a checkpoint folder or a
    hub repo id. ``flip_tta`` None: as the checkpoint recommends. ``slice_axis`` None: the
    volume's through-plane axis (from its affine). ``doubt`` None: for models of several
    branches only (where it costs nothing extra); True/False: always/never. ``ras``: the
    mesh (and the principal axes of the measures) in RAS instead of LPS."""

    model: str = "default"
    backbone_source: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 8
    threshold: float = 0.5
    morphology: bool = True
    largest_cc: bool = True
    flip_tta: bool | None = None
    slice_axis: int | None = None
    doubt: bool | None = False
    ras: bool = False

    def check(self):
        """The device these settings run on; InputError for any bad choice (no model loaded)."""
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {self.batch_size}.")
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {self.threshold}.")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}."
            )
        if self.slice_axis not in (None, 0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, not {self.slice_axis}.")
        device = resolve_device(self.device)
        autocast_dtype(device, self.precision)
        return device


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """One segmented volume. Arrays are in the volume's (file) voxel order.

    ``roi``: the region segmented (None: the whole volume); ``index``: it as index slices.
    ``measures`` is None for an empty mask. ``notes``: what the run chose on its own (e.g. a
    fallback field of view). ``doubt``/``doubtful``: with doubt on, the doubt map and the
    slices along ``slice_axis`` to check first."""

    labels: np.ndarray
    roi: RegionOfInterest | None
    index: tuple[slice, slice, slice]
    slice_axis: int
    measures: LAMeasures | None
    warnings: tuple[str, ...]
    mesh: object | None = None
    doubt: np.ndarray | None = None
    doubtful: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    probabilities: np.ndarray | None = field(default=None, repr=False)
    prepared: PreparedVolume | None = field(default=None, repr=False)
    seconds: float = 0.0


class SegmentationEngine:
    """A loaded model and its Predictor, for any number of volumes."""

    def __init__(self, settings: InferenceSettings = InferenceSettings(), *, model=None):
        """``model``: an already loaded model (else ``settings.model`` is loaded)."""
        from .models import load_model

        self.settings = settings
        device = settings.check()
        if model is None:
            model = load_model(settings.model, backbone_source=settings.backbone_source)
        self.predictor = Predictor(
            model,
            device=device,
            batch_size=settings.batch_size,
            precision=settings.precision,
            threshold=settings.threshold,
            morphology=settings.morphology,
            largest_cc=settings.largest_cc,
            flip_tta=settings.flip_tta,
        )

    @property
    def model(self):
        return self.predictor.model

    @property
    def device(self):
        return self.predictor.device

    def slice_axis(self, meta: VolumeMeta | None) -> int:
        if self.settings.slice_axis is not None:
            return self.settings.slice_axis
        return meta.through_plane_axis() if meta is not None else 2

    def region(
        self, meta: VolumeMeta, roi=None, center=None
    ) -> tuple[RegionOfInterest | None, tuple[str, ...]]:
        """The region to segment and the notes it gives: ``roi`` as given, or the model's
        training field of view (mm) around ``center`` (array indices, e.g. a click)."""
        from .grid import fallback_note, field_of_view_mm

        if roi is not None and center is not None:
            raise InputError("give a region of interest or a centre, not both.")
        if center is None:
            return roi, ()
        extent, recorded = field_of_view_mm(self.model.provenance)
        notes = () if recorded else (fallback_note(self.model.display_name),)
        return RegionOfInterest.around(center, meta, extent, self.slice_axis(meta)), notes

    def wants_doubt(self) -> tuple[bool, tuple[str, ...]]:
        """Whether to map the doubt, and a note when it was asked for but cannot be had (its
        mask is the predictor's only without flip averaging)."""
        choice, predictor = self.settings.doubt, self.predictor
        if predictor.flip_tta:
            note = "no doubt map with flip averaging on; turn it off to see the doubt"
            return False, (note,) if choice else ()
        return (len(predictor.branches) > 1 if choice is None else bool(choice)), ()

    def segment(
        self,
        volume: np.ndarray,
        meta: VolumeMeta,
        *,
        roi: RegionOfInterest | None = None,
        center=None,
        progress: Callable[[int, int], None] | None = None,
        cancel=None,
        keep: bool = False,
    ) -> SegmentationResult:
        """Segment ``volume`` in ``roi`` or around ``center`` (neither: all of it), then
        measure and check the mask (see the module docstring). ``keep``: keep the
        probabilities and the prepared volume in the result (for a refinement; otherwise the
        probabilities, a float32 volume, are freed before the mesh is made)."""
        start = time.perf_counter()
        region, notes = self.region(meta, roi, center)
        doubt_on, doubt_notes = self.wants_doubt()
        prepared = self.predictor.prepare(
            volume, meta, slice_axis=self.slice_axis(meta), roi=region
        )
        doubt = doubtful = None
        if doubt_on:
            from .doubt import doubt_map, rank_slices

            probabilities, doubt = doubt_map(
                self.predictor, prepared, progress=progress, cancel=cancel
            )
        else:
            probabilities = self.predictor.probabilities(prepared, progress=progress, cancel=cancel)
        labels = self.predictor.labels(probabilities, prepared)
        if doubt_on:
            doubtful = rank_slices(doubt, prepared.slice_axis, DOUBTFUL_SLICES, mask=labels)
        if not keep:
            probabilities = None
        report = measure_mask(
            labels,
            meta,
            region=prepared.index if region is not None else None,
            ras=self.settings.ras,
        )
        return SegmentationResult(
            labels=labels,
            roi=region,
            index=prepared.index,
            slice_axis=prepared.slice_axis,
            measures=report.measures,
            warnings=report.warnings,
            mesh=report.mesh,
            doubt=doubt,
            doubtful=tuple(doubtful or ()),
            notes=notes + doubt_notes,
            probabilities=probabilities,
            prepared=prepared if keep else None,
            seconds=time.perf_counter() - start,
        )


def warn_notes(engine: SegmentationEngine, result: SegmentationResult | None = None) -> None:
    """The engine's and a result's notes as ``UserWarning`` (a napari worker shows them)."""
    notes = [engine.model.untrained_warning()] if result is None else list(result.notes)
    for note in filter(None, notes):
        warnings.warn(note, UserWarning, stacklevel=2)
