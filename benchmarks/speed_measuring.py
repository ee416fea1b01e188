"""What ``benchmarks/speed.py`` measures with: timing on a device, the GEMM roofline, FLOP
counts, peak memory, a description of the machine, and the test volumes (a real LA 2018 case's
central slices, else a synthetic LGE-like one). Also used by ``batch_memory.py`` and
``responsiveness.py`` for the machine's description."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

LA2018_SPACING = (0.625, 0.625, 1.25)
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- measuring primitives


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn()`` (device work included)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def gemm_gflops(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """Dense matmul rate (GFLOP/s): the roofline a compute-bound model can at best reach."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: library initialisation, thread pool, clocks
    seconds = best_time(lambda: torch.matmul(a, b), device, repeats)
    return 2 * size**3 / seconds / 1e9


def gemm_probe(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """GEMM rate sustained for about ``seconds``: as long as the model runs it is compared
    with, so on a shared machine both get the same share of the CPU (a 0.1 s GEMM can slip
    into a quiet moment that a 10 s model run cannot, which would bias the ratio down)."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    count = 0
    sync(device)
    start = time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
        if device.type == "cuda" and count % 16 == 0:
            sync(device)
    sync(device)
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def count_flops(fn, *args) -> int:
    """FLOPs of one call, with torch's FlopCounterMode.

    PyTorch's counter has no formula for the CPU flash-attention kernel that
    ``scaled_dot_product_attention`` dispatches to on CPUs, so its FLOPs (a fifth or more of a
    ViT's at 1025 tokens) would be missed; the standard SDPA formula is added for it.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    mapping = {}
    cpu_kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_kernel is not None:
        mapping[cpu_kernel] = cpu_sdpa
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """Other work on the machine slows every figure: the report says how busy it was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_lines(device: torch.device, dtype: torch.dtype | None) -> list[str]:
    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}",
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"device {device}, compute dtype {str(dtype or torch.float32).replace('torch.', '')}",
        f"load average (1, 5, 15 min) at start: {load_average()}",
    ]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}")
    return lines


# ---------------------------------------------------------------- test volumes


def la2018_case() -> Path | None:
    for root in (os.environ.get("LA2018_DIR"), REPO_ROOT.parent / "shared" / "data" / "la2018"):
        if root and (Path(root) / "cases.txt").is_file():
            first = (Path(root) / "cases.txt").read_text().split()[0]
            image = Path(root) / "images" / f"{first}.nii.gz"
            if image.is_file():
                return image
    return None


def synthetic_volume(shape, seed: int = 0) -> np.ndarray:
    """LGE-like: noisy dark background with a bright ellipsoid (an 'atrium').

    Built in place, slice by slice, so making it never holds more than the volume itself
    (the peak RSS measured afterwards is the pipeline's, not this function's)."""
    rng = np.random.default_rng(seed)
    volume = rng.standard_normal(shape, dtype=np.float32)
    volume *= 20.0
    volume += 40.0
    x, y = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape[:2]], indexing="ij")
    for k, z in enumerate(np.linspace(-1, 1, shape[2])):
        volume[:, :, k] += 120.0 * ((x / 0.3) ** 2 + (y / 0.3) ** 2 + (z / 0.7) ** 2 <= 1.0)
    return np.clip(volume, 0, 255, out=volume)


def test_volume(shape_text: str | None, slices: int):
    """``(volume XYZ, meta, description)``: a real case's central slices, else synthetic."""
    from napari_la_dinov2.volume_files import VolumeMeta, read_volume

    if shape_text is None:
        case = la2018_case()
        if case is not None:
            volume, meta = read_volume(case)
            axis = meta.through_plane_axis()
            start = max(0, volume.shape[axis] // 2 - slices // 2)
            index = [slice(None)] * 3
            index[axis] = slice(start, start + slices)
            volume = np.ascontiguousarray(volume[tuple(index)])
            meta = VolumeMeta(affine=meta.affine, shape=volume.shape, source=meta.source)
            return volume, meta, f"la2018 case {case.stem.split('.')[0]}, {slices} central slices"
        shape = (208, 144, slices)
    else:
        shape = tuple(int(v) for v in shape_text.split("x"))
    meta = VolumeMeta.from_spacing(shape, LA2018_SPACING)
    return synthetic_volume(shape), meta, "synthetic"
