"""Volume inference: numpy volume in, uint8 label volume of the same shape out.

Two levels, as segment-anything's predictor sets an image once and then predicts:

1. :meth:`Predictor.prepare` makes a volume ready once: the region of interest, its intensity
   statistics, and for each branch of the model the region cut along that branch's axis
   (views of the array, nothing copied).
2. :meth:`Predictor.probabilities` streams each branch's slices through its network in
   batches (only one batch is ever resized, so memory stays bounded for a full field of view),
   maps the logits back onto the volume's grid and averages the branches;
   :meth:`Predictor.labels` thresholds and cleans them.

Training reuses both levels: validation runs :meth:`Predictor.predict`, and the frozen-feature
cache feeds its cached token maps to level 2 in place of the network (``logits_of``). Reduced
precision (bf16, else fp16) is used on CUDA only: on CPUs it is slower than fp32.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError, raise_if_cancelled
from .grid import acquisition_axes
from .postprocess import postprocess
from .preprocess import IntensityStats, view_axis
from .volume_files import VolumeMeta

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int], None]  # (slices done, slices in all) over all branches
# (branch index, first slice, stop slice) -> Bx1xSxS logits at the model's input size
LogitsSource = Callable[[int, int, int], torch.Tensor]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must exist on this machine."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device cpu."
        )
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise InputError(
            f"device {device!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
        )
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' was asked for but is not available; use --device cpu.")
    return chosen


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 (or fp16 on GPUs without bf16) on CUDA; None (fp32) elsewhere or when asked."""
    if precision == "fp32" or device.type != "cuda":
        return None
    if precision == "fp16":
        return torch.float16
    if precision in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise InputError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}.")


@dataclass(frozen=True)
class RegionOfInterest:
    """An in-plane box and a slice range, in array indices (stops exclusive). Outside: mask 0.

    ``box`` is ``(row_start, row_stop, col_start, col_stop)`` in the slice's own 2D axes, i.e.
    the two volume axes other than the slice axis, in their array order.
    """

    box: tuple[int, int, int, int] | None = None
    slices: tuple[int, int] | None = None

    def clamp(self, shape: tuple[int, ...], slice_axis: int) -> tuple[slice, slice, slice]:
        """Index of the region in the volume (a tuple of 3 slices), checked against ``shape``."""
        inplane = [s for axis, s in enumerate(shape) if axis != slice_axis]
        r0, r1, c0, c1 = self.box if self.box is not None else (0, inplane[0], 0, inplane[1])
        z0, z1 = self.slices if self.slices is not None else (0, shape[slice_axis])
        r0, c0, z0 = max(r0, 0), max(c0, 0), max(z0, 0)
        r1, c1, z1 = min(r1, inplane[0]), min(c1, inplane[1]), min(z1, shape[slice_axis])
        if r1 - r0 < 8 or c1 - c0 < 8 or z1 <= z0:
            raise InputError(
                f"the region of interest {self} leaves nothing to segment in a volume of shape "
                f"{tuple(shape)}; it needs at least 8x8 voxels in-plane and one slice."
            )
        index = [slice(r0, r1), slice(c0, c1)]
        index.insert(slice_axis, slice(z0, z1))
        return tuple(index)

    @classmethod
    def around(
        cls, center_voxel, meta: VolumeMeta, field_of_view_mm, slice_axis: int | None = None
    ) -> RegionOfInterest:
        """The region of ``field_of_view_mm`` (in-plane 1, in-plane 2, through-plane: see
        :mod:`.grid`) centred on ``center_voxel`` (array indices, e.g. one click on the atrium).

        Millimetres become voxels with the volume's own spacing, so a model trained on 120 mm
        wide crops sees 120 mm whatever the scan's voxel size. Near an edge the region slides
        inside the volume, keeping its size (the model's field of view); along an axis shorter
        than it, the region is the whole axis. A centre outside the volume is an InputError.
        """
        slice_axis = meta.through_plane_axis() if slice_axis is None else slice_axis
        shape = np.asarray(meta.shape)
        center = np.asarray(center_voxel, dtype=float)
        if center.shape != (3,) or np.any(center < 0) or np.any(center > shape - 1):
            raise InputError(
                f"the centre {tuple(np.round(center, 1).tolist())} is outside the volume of "
                f"shape {tuple(shape.tolist())}; give array indices from 0 to shape - 1."
            )
        axes = acquisition_axes(slice_axis)
        size = np.empty(3, dtype=int)
        spacing = np.asarray(meta.spacing)[list(axes)]
        size[list(axes)] = np.round(np.asarray(field_of_view_mm, dtype=float) / spacing)
        size = np.clip(size, 1, shape)
        # The centre has floor((n - 1) / 2) voxels of the region before it: the middle one for an
        # odd size, the one before the midpoint for an even one.
        start = np.clip(np.floor(center - (size - 1) / 2 + 0.5).astype(int), 0, shape - size)
        stop = start + size
        rows, cols = axes[0], axes[1]
        box = (int(start[rows]), int(stop[rows]), int(start[cols]), int(stop[cols]))
        return cls(box=box, slices=(int(start[slice_axis]), int(stop[slice_axis])))

    @classmethod
    def parse(cls, text: str) -> RegionOfInterest:
        """'r0:r1,c0:c1[,z0:z1]' (array indices, stops exclusive) as typed on a command line."""
        try:
            parts = [tuple(int(v) for v in p.split(":")) for p in text.split(",")]
            if len(parts) not in (2, 3) or any(len(p) != 2 for p in parts):
                raise ValueError
        except ValueError:
            raise InputError(
                f"--roi {text!r} is not of the form r0:r1,c0:c1[,z0:z1] (integers)."
            ) from None
        box = (*parts[0], *parts[1])
        return cls(box=box, slices=parts[2] if len(parts) == 3 else None)


def sigmoid_in_place(logits: np.ndarray) -> np.ndarray:
    """Logits -> probabilities without a second array (float32 throughout)."""
    with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as it should
        np.exp(np.negative(logits, out=logits), out=logits)
    logits += 1.0
    return np.reciprocal(logits, out=logits)


@dataclass(frozen=True, eq=False)
class PreparedVolume:
    """A volume made ready once for a model (level 1 of the :class:`Predictor`).

    ``index`` is the region of interest in the volume (3 slices); ``stats`` the region's
    intensity window; ``slices[b]`` the region cut along branch ``b``'s axis ``axes[b]``, as an
    ``SxHxW`` view (slices first)."""

    shape: tuple[int, int, int]
    slice_axis: int
    index: tuple[slice, slice, slice]
    stats: IntensityStats
    slices: tuple[np.ndarray, ...]
    axes: tuple[int, ...]

    @property
    def total(self) -> int:
        """Slices over all branches (what progress counts)."""
        return sum(view.shape[0] for view in self.slices)

    @property
    def region_shape(self) -> tuple[int, ...]:
        return tuple(len(range(*s.indices(n))) for s, n in zip(self.index, self.shape))


class Predictor:
    """Runs one model over volumes: ``predict(volume, meta) -> uint8 labels`` (3D arrays in the
    file's voxel order, the labels of the volume's shape), or
    ``prepare`` then ``probabilities`` then ``labels`` (see the module docstring)."""

    def __init__(
        self,
        model,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        precision: str = "auto",
        threshold: float = 0.5,
        morphology: bool = True,
        largest_cc: bool = True,
        flip_tta: bool | None = None,
    ):
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {batch_size}.")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {threshold}.")
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.model = model.to(self.device).eval()
        self.branches = model.branches
        self.batch_size = batch_size
        self.threshold = threshold
        self.morphology = morphology
        self.largest_cc = largest_cc
        # None: what the checkpoint recommends (from the validation of the shipped model).
        recommended = model.provenance.get("inference", {})
        self.flip_tta = recommended.get("flip_tta", False) if flip_tta is None else flip_tta

    def prepare(
        self,
        volume: np.ndarray,
        meta: VolumeMeta | None = None,
        *,
        slice_axis: int | None = None,
        roi: RegionOfInterest | None = None,
    ) -> PreparedVolume:
        """Level 1: the region, its statistics and each branch's slices (checked)."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise InputError(f"a 3D volume is needed, got an array of shape {volume.shape}.")
        if slice_axis is None:
            slice_axis = meta.through_plane_axis() if meta is not None else 2
        if slice_axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, not {slice_axis}.")
        index = (roi or RegionOfInterest()).clamp(volume.shape, slice_axis)
        region = volume[index]  # a view: nothing copied
        axes = tuple(view_axis(slice_axis, branch.view) for branch in self.branches)
        return PreparedVolume(
            shape=volume.shape,
            slice_axis=slice_axis,
            index=index,
            stats=IntensityStats.of(region),
            slices=tuple(np.moveaxis(region, axis, 0) for axis in axes),
            axes=axes,
        )

    def inputs(self, prepared: PreparedVolume, branch: int, first: int, stop: int):
        """``BxCxSxS`` model input of slices ``first..stop-1`` of a branch, on the device."""
        transform = self.branches[branch].transform
        raw = transform.gather(prepared.slices[branch], first, stop).to(self.device)
        return transform.model_input(raw, prepared.stats)

    def _network_logits(self, prepared: PreparedVolume, branch: int, first: int, stop: int):
        net, batch = self.branches[branch].net, self.inputs(prepared, branch, first, stop)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = net(batch)
            if self.flip_tta:  # average with the left-right mirrored prediction
                logits = (logits + net(batch.flip(-1)).flip(-1)) / 2
        return logits

    def probabilities(
        self,
        prepared: PreparedVolume,
        *,
        logits_of: LogitsSource | None = None,
        branches: list[int] | None = None,
        progress: ProgressCallback | None = None,
        cancel=None,
    ) -> np.ndarray:
        """Level 2: foreground probability (float32, the volume's shape; 0 outside the
        region), from the mean logits of all branches (or of the ``branches`` given).
        ``logits_of`` replaces the networks (e.g. a decoder on cached tokens)."""
        if logits_of is None:
            logits_of = lambda b, first, stop: self._network_logits(prepared, b, first, stop)  # noqa: E731
        chosen = list(range(len(prepared.axes))) if branches is None else list(branches)
        total = sum(prepared.slices[b].shape[0] for b in chosen)
        full = np.zeros(prepared.shape, dtype=np.float32)
        # Logits are summed in place into ``full`` over the region (a view), then turned into
        # probabilities: the output volume is the only full-size float array held.
        logits_sum = full[prepared.index]
        done = 0
        if progress:
            progress(0, total)
        with torch.inference_mode():
            for b in chosen:
                out = np.moveaxis(logits_sum, prepared.axes[b], 0)
                done = self._run_branch(
                    b, prepared, out, logits_of, (done, total), progress, cancel
                )
        logits_sum /= len(chosen)
        sigmoid_in_place(logits_sum)
        return full

    def branch_logits(
        self,
        prepared: PreparedVolume,
        b: int,
        *,
        logits_of=None,
        count=None,
        progress=None,
        cancel=None,
    ) -> np.ndarray:
        """Branch ``b``'s own logits over the region (float32, ``prepared.region_shape``);
        ``count``: (slices done before, slices in all) for progress."""
        if logits_of is None:
            logits_of = lambda b, first, stop: self._network_logits(prepared, b, first, stop)  # noqa: E731
        out = np.zeros(prepared.region_shape, dtype=np.float32)
        count = count or (0, prepared.slices[b].shape[0])
        with torch.inference_mode():
            view = np.moveaxis(out, prepared.axes[b], 0)
            self._run_branch(b, prepared, view, logits_of, count, progress, cancel)
        return out

    def _run_branch(self, b, prepared, out, logits_of, count, progress, cancel) -> int:
        """Add branch ``b``'s logits for each of its slices into ``out`` (``SxHxW``); ``count``
        is (slices done so far, slices in all) over the branches run; returns the new done."""
        transform, (slices, height, width) = self.branches[b].transform, out.shape
        done, total = count
        first = 0
        while first < slices:
            raise_if_cancelled(cancel, f"after {done} of {total} slices")
            stop = min(first + self.batch_size, slices)
            try:
                logits = transform.restore(logits_of(b, first, stop).float(), height, width)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                warnings.warn(
                    f"GPU out of memory; batch size halved to {self.batch_size}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            out[first:stop] += logits.cpu().numpy()
            done += stop - first
            first = stop
            if progress:
                progress(done, total)
        return done

    def labels(self, probabilities: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
        """uint8 labels: thresholded, then cleaned in the acquisition's plane."""
        mask = probabilities > self.threshold
        return postprocess(
            mask, prepared.slice_axis, morphology=self.morphology, largest_cc=self.largest_cc
        ).astype(np.uint8)

    def predict(
        self,
        volume: np.ndarray,
        meta: VolumeMeta | None = None,
        *,
        slice_axis: int | None = None,
        roi: RegionOfInterest | None = None,
        progress: ProgressCallback | None = None,
        cancel=None,
    ) -> np.ndarray:
        """uint8 labels (1 = left atrium) on the grid of ``volume``."""
        prepared = self.prepare(volume, meta, slice_axis=slice_axis, roi=roi)
        probabilities = self.probabilities(prepared, progress=progress, cancel=cancel)
        return self.labels(probabilities, prepared)
