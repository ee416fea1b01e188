"""Frozen-feature cache: one decoder epoch over an 88-slice volume, with cached DINOv2 ViT-S/14
token maps vs recomputing the (frozen) backbone in every step.

Real architecture at the paper's 448x448 input, random weights (pretrained=False: the speed
does not depend on the weights). One epoch = every slice of the volume once, batch 32 (the
paper's DINOv2 batch), Adam + BCEWithLogits, exactly the two code paths finetune takes. The
one-time cost of filling the cache (one backbone pass over the volume) is printed too.

    python benchmarks/feature_cache.py [--threads 2] [--head 64 --decoder 32,16]

Uses a real LA 2018 volume ($LA2018_DIR or ../shared/data/la2018) when present, else a
synthetic one of the same size (183x140x88).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import build_model
from napari_la_dinov2.training import Case
from napari_la_dinov2.training.feature_cache import FeatureCache
from napari_la_dinov2.training.slices import PreparedCase, make_batch
from napari_la_dinov2.training.token_batches import TokenBatches
from napari_la_dinov2.volume_files import VolumeMeta


def volume() -> Case:
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("LA2018_DIR", root.parent / "shared" / "data" / "la2018"))
    if (folder / "cases.txt").is_file():
        from napari_la_dinov2.training import load_case_folder

        name = (folder / "cases.txt").read_text().split()[0]
        return load_case_folder(folder, names=[name])[0]
    rng = np.random.default_rng(0)
    shape = (183, 140, 88)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = ((x / 0.3) ** 2 + (y / 0.3) ** 2 + (z / 0.6) ** 2 <= 1).astype(np.uint8)
    image = (40 + 20 * rng.standard_normal(shape) + 120 * mask).astype(np.float32)
    return Case("synthetic", image, mask, VolumeMeta.from_spacing(shape, (0.625, 0.625, 1.25)))


def epoch(step_fn, count: int, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, batch):
        step_fn([(0, s) for s in range(start, min(start + batch, count))])
    return time.perf_counter() - started


def _learn(optimizer, loss) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--head", type=int, default=64, help="token head channels (model default)")
    parser.add_argument("--decoder", default="32,16", help="decoder channels (model default)")
    parser.add_argument("--input-size", type=int, default=448, help="smaller only to smoke-test")
    parser.add_argument("--slices", type=int, default=88, help="fewer only to smoke-test")
    return parser.parse_args()


def _model_and_case(args: argparse.Namespace, decoder: tuple[int, ...]):
    """A DINOv2 ViT-S/14 of random weights with the model's head and decoder, in training
    mode, and the real volume, cut to ``--slices`` middle slices."""
    torch.manual_seed(0)
    model = build_model(
        "dinov2_vits14",
        pretrained=False,
        head_channels=args.head,
        decoder_channels=decoder,
        preprocessing={"input_size": args.input_size},
    )
    model.train()
    case = volume()
    if args.slices < case.image.shape[2]:
        start = (case.image.shape[2] - args.slices) // 2  # the middle holds the atrium
        keep = slice(start, start + args.slices)
        case = Case(case.name, case.image[..., keep], case.labels[..., keep], case.meta)
    return model, case


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    decoder = tuple(int(c) for c in args.decoder.split(","))
    model, case = _model_and_case(args, decoder)
    transform = model.branches[0].transform
    prepared = [PreparedCase.of(case, transform)]
    count = prepared[0].images.shape[0]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    device = torch.device("cpu")

    def full_step(picks):  # finetune without the cache: the frozen backbone runs every step
        x, y = make_batch(prepared, picks, transform)
        _learn(optimizer, loss_fn(model(x), y))

    started = time.perf_counter()
    batches = TokenBatches(  # fine-tuning's own machinery: it takes the model's Predictor
        Predictor(model, device=device),
        [case],
        [],
        cache=FeatureCache(),
        flips=False,
        generator=torch.Generator(),
        sampling={},
    )
    model.train()
    fill = time.perf_counter() - started
    decoder_module = batches.module

    def cached_step(picks):  # finetune with the cache: only the head and decoder run
        batches.picks = picks
        (x,), (y,) = batches.batch(0, len(picks))
        _learn(optimizer, loss_fn(decoder_module(x), y))

    cached_step([(0, 0)])  # warm-up of both paths (allocator, kernels)
    full_step([(0, 0)])
    full = epoch(full_step, count, args.batch)
    cached = epoch(cached_step, count, args.batch)
    parameters = sum(p.numel() for p in model.net.parameters() if p.requires_grad)
    print(f"# {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"model: DINOv2 ViT-S/14 (random weights, frozen) + head {args.head} + decoder "
        f"{decoder} ({parameters / 1e6:.2f} M trainable), input {args.input_size}x{args.input_size}, "
        f"batch {args.batch}"
    )
    print(
        f"volume: {case.name}, {count} slices; tokens {tuple(batches.tokens[0].shape)} "
        f"float16, {batches.tokens[0].numel() * 2 / 2**20:.0f} MiB"
    )
    print(f"cache fill (one backbone pass, once per case): {fill:.1f} s")
    print(f"one epoch recomputing the backbone: {full:.1f} s")
    print(f"one epoch on cached features:       {cached:.1f} s")
    print(f"speed-up: {full / cached:.1f}x")


if __name__ == "__main__":
    main()
