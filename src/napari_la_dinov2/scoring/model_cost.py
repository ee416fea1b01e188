"""What a model costs to run: parameters, GFLOPs per slice and seconds per volume.

- ``parameters``: every parameter of the model, all branches (members) included.
- ``gflops_per_slice``: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of
  one slice of the model's own input (``1xCxSxS``: its input size and channels) through the
  network of every branch, summed (a three-view ensemble runs three networks per position). A
  multiply-add counts 2 FLOPs (convolutions, matrix products and attention, whose CPU kernel
  torch's counter misses and this module adds; element-wise operations are not counted). Flip averaging, where a checkpoint asks for it, doubles the
  inference cost and is not included.
- ``seconds_per_volume``: either measured here, the wall time of
  :meth:`~napari_la_dinov2.inference.Predictor.predict` on one image (the whole path:
  intensity statistics, resizing, the networks, post-processing) after a warm-up of one batch,
  the median of ``repeats`` runs; or read from a ``timing.csv`` in the prediction folder (columns
  ``case`` and ``seconds``, the time it took to segment each case), averaged over the cases
  compared. ``timing`` says which, with the device or the number of cases.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError

TIMING_FILE = "timing.csv"


def count_flops(model) -> int:
    """FLOPs of one input slice through every branch's network (see the module docstring)."""
    import torch

    size, channels = model.preprocessing.input_size, model.preprocessing.channels
    parameter = next(model.parameters())
    x = torch.zeros(1, channels, size, size, dtype=parameter.dtype, device=parameter.device)
    return sum(forward_flops(branch.net, x) for branch in model.branches)


def forward_flops(forward, *inputs) -> int:
    """FLOPs that ``forward(*inputs)`` runs, by ``FlopCounterMode``, attention included."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # torch counts the CUDA attention kernels but not the CPU one: count it the same way, so a
    # ViT's GFLOPs do not depend on the device.
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        forward(*inputs)
    return int(counter.get_total_flops())


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def time_volume(model, volume, meta=None, *, device: str = "auto", repeats: int = 1) -> float:
    """Median wall time (s) of segmenting ``volume`` with ``model`` (see the module docstring)."""
    import torch

    from ..segmentation import InferenceSettings, SegmentationEngine

    # The network's time alone: the engine's Predictor, without the mesh and measures.
    predictor = SegmentationEngine(InferenceSettings(device=device), model=model).predictor
    prepared = predictor.prepare(volume, meta)
    with torch.inference_mode():  # warm-up: kernels, caches, CUDA context
        predictor.branches[0].net(predictor.inputs(prepared, 0, 0, 1))
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        predictor.predict(volume, meta)
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def read_timing(folder: str | os.PathLike, cases: Sequence[str]) -> tuple[float, int] | None:
    """Mean seconds per volume over ``cases`` from ``folder/timing.csv`` and how many of the
    cases it had; None without the file. A file without ``case``/``seconds`` is refused."""
    path = Path(folder) / TIMING_FILE
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        seconds = {row["case"]: float(row["seconds"]) for row in rows}
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise InputError(
            f"{path} is not a timing table ({error.__class__.__name__}: {error}); give columns "
            "case and seconds, one row per segmented case."
        ) from None
    found = [seconds[c] for c in cases if c in seconds]
    if not found:
        return None
    return float(sum(found) / len(found)), len(found)


def model_cost(
    source,
    *,
    image: str | os.PathLike | None = None,
    device: str = "auto",
    repeats: int = 1,
) -> dict:
    """``parameters``, ``gflops_per_slice`` and, with an ``image`` file, ``seconds_per_volume``
    and ``timing`` of a model named as :func:`~napari_la_dinov2.models.load_model` takes it
    (``default``, a registry name with random weights: the same cost, no download, or a
    checkpoint)."""
    from ..models import load_model

    model = load_model(source, pretrained=False).eval()
    cost = dict(
        parameters=count_parameters(model),
        gflops_per_slice=count_flops(model) / 1e9,
        seconds_per_volume=None,
        timing="",
    )
    if image is not None:
        from ..inference import resolve_device
        from ..volume_files import read_volume

        volume, meta = read_volume(image)
        cost["seconds_per_volume"] = time_volume(
            model, volume, meta, device=device, repeats=repeats
        )
        cost["timing"] = f"measured: {Path(image).name} on {resolve_device(device).type}"
    return cost
