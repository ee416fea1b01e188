#!/usr/bin/env python
"""Speed benchmark: slices per second of each model, against the machine's own GEMM roofline.

Not a test: it prints figures (and writes them to benchmarks/results/). Every figure is measured
in this run; nothing is hard-coded. For each model at real size with random weights:

1. the machine's dense GEMM rate (torch.matmul of large matrices in the compute dtype; fp32
   "sgemm" on CPUs), best of a few runs, measured at the start and at the end of the run;
   each model's fractions are taken against a GEMM probe run in its own process between
   its timed runs and lasting about as long as one of them (fair on a shared machine);
2. the backbone alone (DINOv2: the ViT up to the patch-token map; CNNs: the whole network,
   which has no separate backbone) on prepared batches: slices/s, FLOPs counted with
   torch.utils.flop_counter on one batch, achieved GFLOP/s and fraction of the roofline;
3. the whole pipeline, ``Predictor.predict`` on a volume (intensity stats, resize, model,
   restore, threshold, opening/closing, largest component): slices/s, its overhead over the
   backbone alone, and the model's FLOPs per second end to end as a fraction of the roofline;
   plus a breakdown (pre-processing, head + decoder, restore, post-processing) to see where
   the overhead goes;
4. peak memory of each model's own process (RSS; on CUDA also max_memory_allocated), and a
   640x640x88 volume through ViT-B/14 in its own process;
5. the embedded default model on a real LA 2018 case (``speed_default.py``): the cold start of
   ``la-dinov2 segment`` (process start to first slice, in a fresh interpreter) and its
   seconds per volume with the pipeline's overhead over its networks.

Each model runs in a fresh subprocess so its peak RSS is its own. Timings are the best of
``--repeats`` runs (the machine may be shared; the best run is the least disturbed).

    python benchmarks/speed.py                 # CPU, default models, ~5-10 min on 2 cores
    python benchmarks/speed.py --quick         # a smoke run in about a minute
    python benchmarks/speed.py --only default  # the default model's figures only (~1-2 min)
    python benchmarks/speed.py --device cuda --precision bf16 --slices 88 --batch-size 32 \\
        --models dinov2_vitb14 dinov2_vitg14
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from speed_measuring import gemm_gflops, la2018_case, load_average, machine_lines

DEFAULT_MODELS = ("dinov2_vits14", "dinov2_vitb14", "unet", "attention_unet", "res50_unet")
BIG_VOLUME = (640, 640, 88)
BIG_VOLUME_MODEL = "dinov2_vitb14"
# Targets from issue 2 (2-core CPU): ViT-S/B end to end >= 80 % of the roofline, pre/post +
# decoder <= 15 % on top of the backbone, 640x640x88 through ViT-B with peak RSS <= 3 GB.
TARGET_ROOFLINE = 0.80
TARGET_OVERHEAD = 0.15
TARGET_BIG_RSS_MB = 3 * 1024
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_worker(model: str, args, *, volume: str | None = None, pipeline_only=False) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        model,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--batch-size",
        str(args.batch_size),
        "--slices",
        str(args.slices),
        "--repeats",
        str(args.repeats),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if volume:
        command += ["--volume", volume]
    if pipeline_only:
        command += ["--pipeline-only"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def report_model(r: dict) -> list[str]:
    roofline = r["gemm_gflops"]
    bb_rate = 1 / r["s_backbone"]
    pipe_rate = 1 / r["s_pipeline"]
    bb_gflops = r["flops_backbone_per_slice"] * bb_rate / 1e9
    e2e_gflops = r["flops_model_per_slice"] * pipe_rate / 1e9
    overhead = r["s_pipeline"] / r["s_backbone"] - 1
    decoder = "-"  # CNNs: the decoder is part of the network timed as the backbone
    if r["family"] == "dinov2":
        decoder = f"{1e3 * max(r['s_model'] - r['s_backbone'], 0.0):.0f}"
    parts = (
        f"pre {1e3 * r['s_pre']:.0f}, head+decoder {decoder}, "
        f"restore {1e3 * r['s_restore']:.0f}, post {1e3 * r['s_post']:.0f} ms/slice"
    )
    memory = f"peak RSS {r['peak_rss_mb']:.0f} MB"
    if "peak_cuda_mb" in r:
        memory += f", peak CUDA {r['peak_cuda_mb']:.0f} MB"
    return [
        f"{r['model']:<16} {r['parameters'] / 1e6:7.1f}M  {r['input_size']:>3}px  "
        f"backbone {bb_rate:6.2f} sl/s {bb_gflops:7.1f} GFLOP/s {_pct(bb_gflops / roofline)}  |  "
        f"pipeline {pipe_rate:6.2f} sl/s {e2e_gflops:7.1f} GFLOP/s {_pct(e2e_gflops / roofline)}  "
        f"overhead {100 * overhead:+5.1f}%  |  {memory}",
        f"{'':16}  FLOPs/slice: backbone {r['flops_backbone_per_slice'] / 1e9:.1f} G, "
        f"model {r['flops_model_per_slice'] / 1e9:.1f} G; {parts}; "
        f"{r['slices']} slices in {r['s_pipeline'] * r['slices']:.2f} s; "
        f"GEMM probe {roofline:.1f} GFLOP/s",
    ]


def verdicts(results: list[dict], big: dict | None) -> list[str]:
    lines = []
    for r in results:
        if r["family"] != "dinov2" or r["model"] not in ("dinov2_vits14", "dinov2_vitb14"):
            continue
        e2e = r["flops_model_per_slice"] / r["s_pipeline"] / 1e9 / r["gemm_gflops"]
        overhead = r["s_pipeline"] / r["s_backbone"] - 1
        lines.append(
            f"{r['model']}: end to end {_pct(e2e).strip()} of roofline "
            f"(target >= {TARGET_ROOFLINE:.0%}: {'met' if e2e >= TARGET_ROOFLINE else 'MISSED'}); "
            f"pre/post + decoder {100 * overhead:+.1f}% over the backbone "
            f"(target <= {TARGET_OVERHEAD:.0%}: {'met' if overhead <= TARGET_OVERHEAD else 'MISSED'})"
        )
    if big is not None:
        ok = big["peak_rss_mb"] <= TARGET_BIG_RSS_MB
        lines.append(
            f"{'x'.join(map(str, big['volume']))} through {big['model']}: peak RSS "
            f"{big['peak_rss_mb']:.0f} MB (target <= {TARGET_BIG_RSS_MB} MB: "
            f"{'met' if ok else 'MISSED'})"
        )
    return lines


def models_report(args, device: torch.device, dtype: torch.dtype | None) -> list[str]:
    """Parts 1-4 for the registry models: the GEMM roofline, each model, the big volume."""
    gemm_dtype = dtype or torch.float32
    gemm_repeats = 3 if args.quick else 8
    gemm_start = gemm_gflops(device, gemm_dtype, gemm_repeats)
    fp32_note = ""
    if gemm_dtype != torch.float32:
        fp32_note = f" (fp32 sgemm {gemm_gflops(device, torch.float32, gemm_repeats):.0f})"
    print(f"gemm at start: {gemm_start:.1f} GFLOP/s", flush=True)

    results = []
    for name in args.models:
        print(f"... {name}", file=sys.stderr, flush=True)
        results.append(run_worker(name, args))
        print("\n".join(report_model(results[-1])), file=sys.stderr, flush=True)
    big = None
    if not args.no_big_volume:
        shape = BIG_VOLUME if not args.quick else (*BIG_VOLUME[:2], 16)
        print(f"... {BIG_VOLUME_MODEL} on {shape}", file=sys.stderr, flush=True)
        big = run_worker(
            BIG_VOLUME_MODEL,
            argparse.Namespace(**{**vars(args), "repeats": 1}),
            volume="x".join(map(str, shape)),
            pipeline_only=True,
        )
    gemm_end = gemm_gflops(device, gemm_dtype, gemm_repeats)

    out = [
        f"{str(gemm_dtype).replace('torch.', '')} GEMM ({gemm_repeats} short runs, best): "
        f"{gemm_start:.1f} GFLOP/s at start, {gemm_end:.1f} at end{fp32_note}. Roofline of each "
        "model: a GEMM probe in its own process, interleaved with its runs and as long as a "
        f"backbone run (1-5 s), best of {args.repeats}.",
        f"test volume: {results[0]['volume_source'] if results else '-'}, shape "
        f"{results[0]['volume'] if results else '-'}",
        "backbone = DINOv2 ViT up to the patch-token map; CNNs: the whole network. "
        "pipeline = Predictor.predict (stats, resize, model, restore, threshold, post-processing); "
        "its GFLOP/s counts the whole model's FLOPs. overhead = pipeline time / backbone time - 1.",
        "",
    ]
    for r in results:
        out += report_model(r)
    if big is not None:
        out.append(
            f"{'x'.join(map(str, big['volume']))} volume through {big['model']}: "
            f"{big['s_pipeline'] * big['slices']:.1f} s ({1 / big['s_pipeline']:.2f} slices/s), "
            f"peak RSS {big['peak_rss_mb']:.0f} MB"
            + (f", peak CUDA {big['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in big else "")
        )
    return [f"gemm at start: {gemm_start:.1f} GFLOP/s", *out, "", *verdicts(results, big)]


def default_model_lines(args) -> list[str]:
    case = la2018_case()
    if case is None:
        return ["default model: skipped (no LA 2018 case; set LA2018_DIR)"]
    if args.device != "cpu":
        return [f"default model: measured on the CPU only (asked: {args.device})"]
    from speed_default import report  # this folder's sibling module

    print("... default model", file=sys.stderr, flush=True)
    return report(case, args.batch_size, max(args.repeats, 5))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--slices", type=int, default=None, help="slices per measurement")
    parser.add_argument("--repeats", type=int, default=None, help="timings are the best of N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-big-volume", action="store_true", help="skip the 640x640x88 run")
    parser.add_argument("--quick", action="store_true", help="few slices, one repeat")
    parser.add_argument(
        "--only",
        choices=("models", "default"),
        help="models: the registry models (1-4); default: the embedded default model (5)",
    )
    parser.add_argument("--out", help="also write the report here")
    # Internal: one model in this process.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-only", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_la_dinov2.inference import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    args.device = str(device)
    if args.slices is None:
        args.slices = (4 if args.quick else 8) if device.type == "cpu" else 88
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2

    if args.worker:
        from speed_model import measure_model

        print(json.dumps(measure_model(args)))
        return 0

    from napari_la_dinov2.inference import autocast_dtype

    dtype = autocast_dtype(device, args.precision)
    started = time.perf_counter()
    settings = f"batch {args.batch_size}"
    if args.only != "default":
        settings = (
            f"{args.slices} slices per measurement, {settings}, best of {args.repeats}, "
            "random weights at real size (registry models)"
        )
    lines = [
        "napari-la-dinov2 speed benchmark",
        "command: python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        *machine_lines(device, dtype),
        f"settings: {settings}",
    ]
    print("\n".join(lines), flush=True)
    out = models_report(args, device, dtype) if args.only != "default" else []
    if args.only != "models":
        out += ["", *default_model_lines(args)]
    out.append(
        f"benchmark wall time: {time.perf_counter() - started:.0f} s; "
        f"load average at end: {load_average()}"
    )
    print("\n".join(out))

    target = args.out
    if target is None and not args.quick:
        suffix = "-coldstart" if args.only == "default" else ""
        target = RESULTS_DIR / f"speed-{device.type}{suffix}.txt"
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text("\n".join([*lines, *out]) + "\n")
        print(f"written to {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
