"""Volume inference: numpy volume in, uint8 label volume of the same shape out.

Slices along the acquisition's through-plane axis (or along the model's view, see
``preprocess.view_axis``) are streamed through the model in batches (only one batch is ever
resized), so memory stays bounded for a full field of view. A multi-view model runs each member
along its own axis over the same region and averages their logits. Reduced precision (bf16,
else fp16) is used on CUDA only: on CPUs it is slower than fp32.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CancelledError, InputError
from .io import VolumeMeta
from .postprocess import postprocess
from .preprocess import IntensityStats, slice_transforms, view_axis, views_of

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int], None]


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
    except RuntimeError as error:
        raise InputError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps."
        ) from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device cpu."
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


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class Predictor:
    """Runs one model over volumes. ``predict(volume XYZ, meta) -> uint8 labels XYZ``."""

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
        # (view, network): one, or one per member of a multi-view model. Any module with a
        # ``preprocessing`` dict can be run (stand-ins in tests, a bare network).
        if hasattr(model, "branches"):
            self.branches = model.branches()
        else:
            self.branches = [(views_of(model.preprocessing)[0], self.model)]
        # One slice transform per branch: members of a multi-view model may fit differently.
        self.transforms = slice_transforms(model.preprocessing)
        self.transform = self.transforms[0]
        self.batch_size = batch_size
        self.threshold = threshold
        self.morphology = morphology
        self.largest_cc = largest_cc
        # None: what the checkpoint recommends (the embedded model ships with flip averaging
        # when it scored better on its validation cases).
        recommended = getattr(model, "provenance", {}).get("inference", {})
        self.flip_tta = recommended.get("flip_tta", False) if flip_tta is None else flip_tta

    def _forward(self, net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = net(batch)
            if self.flip_tta:  # average with the left-right mirrored prediction
                logits = (logits + net(batch.flip(-1)).flip(-1)) / 2
        return logits.float()

    def predict_probabilities(
        self,
        volume: np.ndarray,
        meta: VolumeMeta | None = None,
        *,
        slice_axis: int | None = None,
        roi: RegionOfInterest | None = None,
        progress: ProgressCallback | None = None,
        cancel=None,
    ) -> tuple[np.ndarray, int]:
        """Foreground probability (float32, same shape; 0 outside the ROI) and the slice axis."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise InputError(f"a 3D volume is needed, got an array of shape {volume.shape}.")
        if slice_axis is None:
            slice_axis = meta.through_plane_axis() if meta is not None else 2
        if slice_axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, not {slice_axis}.")
        index = (roi or RegionOfInterest()).clamp(volume.shape, slice_axis)
        region = volume[index]  # a view: nothing copied yet
        stats = IntensityStats.of(region)
        full = np.zeros(volume.shape, dtype=np.float32)
        # Logits are summed in place into ``full`` over the region (a view), then turned into
        # probabilities: the output volume is the only full-size float array held.
        logits_sum = full[index]
        axes = [view_axis(slice_axis, view) for view, _ in self.branches]
        total, done = sum(region.shape[axis] for axis in axes), 0
        if progress:
            progress(0, total)
        with torch.inference_mode():
            for (_, net), transform, axis in zip(self.branches, self.transforms, axes, strict=True):
                done = self._run_view(
                    net, transform, np.moveaxis(region, axis, 0),
                    np.moveaxis(logits_sum, axis, 0), stats, done, total, progress, cancel,
                )  # fmt: skip
        logits_sum /= len(self.branches)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as it should
            np.exp(np.negative(logits_sum, out=logits_sum), out=logits_sum)
        logits_sum += 1.0
        np.reciprocal(logits_sum, out=logits_sum)
        return full, slice_axis

    def _run_view(self, net, transform, region, out, stats, done, total, progress, cancel) -> int:
        """Add ``net``'s logits for every slice of ``region`` (``SxHxW``) into ``out`` (the same
        shape); returns the slices done so far over all views, for progress."""
        height, width = region.shape[1:]
        first = 0
        while first < region.shape[0]:
            if _is_cancelled(cancel):
                raise CancelledError(f"stopped after {done} of {total} slices")
            stop = min(first + self.batch_size, region.shape[0])
            raw = transform.gather(region, first, stop)  # with neighbours in 2.5D
            try:
                batch = transform.prepare(raw.to(self.device), stats)
                logits = transform.restore(self._forward(net, batch), height, width)
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
        probs, axis = self.predict_probabilities(
            volume, meta, slice_axis=slice_axis, roi=roi, progress=progress, cancel=cancel
        )
        mask = probs > self.threshold
        del probs  # free the float volume before post-processing makes its own arrays
        mask = postprocess(mask, axis, morphology=self.morphology, largest_cc=self.largest_cc)
        return mask.astype(np.uint8)
