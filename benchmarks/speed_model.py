"""One registry model's figures for ``benchmarks/speed.py``, measured in a fresh process
(``speed.py --worker NAME``) so that its peak memory is its own.

The Predictor is built here directly, not through ``segmentation.SegmentationEngine``: this
benchmark times the Predictor's own levels (the backbone alone, the whole model, and
``Predictor.predict``) and the pieces between them (preparation, restore, post-processing),
which the engine's one call hides; the engine adds no work of its own on a volume without a
region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from speed_measuring import best_time, count_flops, gemm_probe, peak_rss_mb, test_volume


@dataclass
class _Bench:
    """What every timing of one model shares."""

    predictor: object
    device: torch.device
    dtype: torch.dtype | None
    volume: np.ndarray
    meta: object
    axis: int
    batch_size: int
    repeats: int

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def _predictor(args, spec, device):
    from napari_la_dinov2.inference import Predictor
    from napari_la_dinov2.models import build_model

    # Random weights at real size: nothing to download, same arithmetic as trained weights.
    takes_pretrained = "pretrained" in spec.builder.__init__.__code__.co_varnames
    model = build_model(args.worker, **({"pretrained": False} if takes_pretrained else {}))
    return Predictor(model, device=device, batch_size=args.batch_size, precision=args.precision)


def measure_model(args) -> dict:
    """Everything measured for one model, in this (fresh) process."""
    from napari_la_dinov2.inference import autocast_dtype, resolve_device
    from napari_la_dinov2.models import get_spec

    torch.manual_seed(0)
    device = resolve_device(args.device)
    spec = get_spec(args.worker)
    predictor = _predictor(args, spec, device)
    volume, meta, description = test_volume(args.volume, args.slices)
    bench = _Bench(
        predictor=predictor,
        device=device,
        dtype=autocast_dtype(device, args.precision),
        volume=volume,
        meta=meta,
        axis=meta.through_plane_axis(),
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    result = dict(
        model=args.worker,
        family=spec.family,
        parameters=sum(p.numel() for p in predictor.model.parameters()),
        input_size=predictor.branches[0].transform.size,
        volume=list(volume.shape),
        volume_source=description,
        slices=volume.shape[bench.axis],
        batch_size=args.batch_size,
    )
    cuda_peak = [0]
    run_pipeline = _pipeline_runner(bench, cuda_peak)
    if args.pipeline_only:  # (the memory run keeps nothing beside the pipeline's own)
        # Interpreter + libraries + model + test volume: what the pipeline's peak is on top of.
        result["setup_rss_mb"] = peak_rss_mb()
        result["s_pipeline"] = _pipeline_only(bench, run_pipeline) / result["slices"]
    else:
        result |= _levels_and_pieces(bench, spec.family, run_pipeline)
    result["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        result["peak_cuda_mb"] = cuda_peak[0] / 2**20
    return result


def _pipeline_runner(bench: _Bench, cuda_peak: list):
    def run_pipeline():
        # On CUDA, the peak of the pipeline alone (not of the GEMM probe run beside it).
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(bench.device)
        bench.predictor.predict(bench.volume, bench.meta, slice_axis=bench.axis)
        if bench.device.type == "cuda":
            cuda_peak[0] = max(cuda_peak[0], torch.cuda.max_memory_allocated(bench.device))

    return run_pipeline


def _pipeline_only(bench: _Bench, run_pipeline) -> float:
    """Best seconds of ``Predictor.predict`` on the volume, after one batch of warm-up."""
    slices = bench.volume.shape[bench.axis]
    warm = np.take(bench.volume, range(min(bench.batch_size, slices)), axis=bench.axis)
    bench.predictor.predict(warm, bench.meta, slice_axis=bench.axis)
    return best_time(run_pipeline, bench.device, bench.repeats)


def _levels_and_pieces(bench: _Bench, family: str, run_pipeline) -> dict:
    """FLOPs per slice, the GEMM probe's rate, and the seconds per slice of each level (backbone,
    model, pipeline) and of each piece the pipeline adds (pre, restore, post)."""
    from napari_la_dinov2.preprocess import IntensityStats

    predictor, device = bench.predictor, bench.device
    model = predictor.model
    # Prepared model inputs for every batch, made once (the backbone-alone timing excludes
    # pre-processing by construction).
    region = np.moveaxis(bench.volume, bench.axis, 0)
    stats = IntensityStats.of(region)
    raw_batches = [
        torch.from_numpy(np.ascontiguousarray(region[i : i + bench.batch_size]))
        for i in range(0, region.shape[0], bench.batch_size)
    ]
    transform = predictor.branches[0].transform
    with torch.inference_mode():
        batches = [transform.model_input(raw.to(device), stats) for raw in raw_batches]
    result = {"setup_rss_mb": peak_rss_mb()}
    backbone = model.net.backbone_features if family == "dinov2" else model.net

    def run(network):
        def timed():
            with torch.inference_mode(), bench.autocast():
                for batch in batches:
                    network(batch)

        return timed

    one = batches[0][:1]  # FLOPs of one slice (they scale linearly with the batch)
    with bench.autocast():
        result["flops_backbone_per_slice"] = count_flops(backbone, one)
        result["flops_model_per_slice"] = count_flops(model, one)
    run(backbone)()  # warm-up (allocator, oneDNN primitive cache, cuDNN autotune)
    run(model)()
    steps = dict(backbone=run(backbone), model=run(model), pipeline=run_pipeline)
    steps |= _pieces(bench, region, stats, raw_batches, batches)
    result["gemm_gflops"], best = _interleaved_best(bench, steps)
    slices = region.shape[0]
    return result | {f"s_{name}": seconds / slices for name, seconds in best.items()}


def _pieces(bench: _Bench, region, stats, raw_batches, batches) -> dict:
    """The pieces the pipeline adds around the model, to see where its overhead goes."""
    from napari_la_dinov2.postprocess import postprocess
    from napari_la_dinov2.preprocess import IntensityStats

    transform = bench.predictor.branches[0].transform
    height, width = region.shape[1:]
    with torch.inference_mode():
        with bench.autocast():
            logits = [bench.predictor.branches[0].net(batch).float() for batch in batches]
        restored = [torch.sigmoid(transform.restore(t, height, width)) for t in logits]
    mask = np.moveaxis(torch.cat(restored).cpu().numpy(), 0, bench.axis) > 0.5

    def run_pre():
        IntensityStats.of(region)
        with torch.inference_mode():
            for raw in raw_batches:
                transform.model_input(raw.to(bench.device), stats)

    def run_restore():
        with torch.inference_mode():
            for item in logits:
                torch.sigmoid(transform.restore(item, height, width)).cpu().numpy()

    return dict(pre=run_pre, restore=run_restore, post=lambda: postprocess(mask, bench.axis))


def _interleaved_best(bench: _Bench, steps: dict) -> tuple[float, dict]:
    """The best GEMM probe rate and the best seconds of each step over interleaved repeats: on
    a shared machine every measurement gets the same chance of landing in a quiet moment, so
    their ratios stay fair. The probe lasts about as long as a backbone run (1-5 s)."""
    device, dtype = bench.device, bench.dtype or torch.float32
    best = dict.fromkeys(steps, float("inf"))
    best["backbone"] = best_time(steps["backbone"], device, 1)  # also sizes the GEMM probe
    gemm = 0.0
    for _ in range(bench.repeats):
        gemm = max(gemm, gemm_probe(device, dtype, min(max(best["backbone"], 1.0), 5.0)))
        for name, step in steps.items():
            best[name] = min(best[name], best_time(step, device, 1))
    return gemm, best
