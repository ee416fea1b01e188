"""Step 2 of the click model's recipe: train one view's click network, in resumable chunks.

The network starts as the embedded default's member for that view, widened by the mask and
click channels (their weights zero: before training it answers as the default), and learns on
episodes of simulated clicks (:mod:`napari_la_dinov2.interactive.samples`) over the default's
64 training patients: BCE over the crop plus soft Dice over the click's window, Adam with a
cosine decay over ``--total-steps``, BatchNorm statistics kept from the default (a crop batch
is no full slice). ``<work>/member<b>/`` holds the weights, the optimiser state (safetensors,
no pickle) and progress.json; a second call goes on from there, so training fits in chunks
(``--steps`` is where this call stops).

    python training/click_model/train_clicks.py --work runs/clicks --member 0 --steps 400 --total-steps 1200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from cache_default import DATA, default_split  # this folder is on sys.path as a script
from safetensors.torch import load_file, save_file

from napari_la_dinov2.interactive import Click, ClickModel
from napari_la_dinov2.interactive.samples import EpisodeSampler, TrainingCase
from napari_la_dinov2.models import load_model
from napari_la_dinov2.preprocess import view_axis
from napari_la_dinov2.training.state import load_optimizer, save_optimizer
from napari_la_dinov2.volume_files import read_volume


def load_cases(names, work: Path) -> list[TrainingCase]:
    cases = []
    for name in names:
        image, meta = read_volume(DATA / "images" / f"{name}.nii.gz")
        truth, _ = read_volume(DATA / "labels" / f"{name}.nii.gz")
        cached = np.load(work / "cache" / f"{name}.npz")
        logits = [cached[f"view{b}"] for b in range(len(cached.files))]
        spacing = tuple(float(s) for s in meta.spacing)
        case = TrainingCase(name, image, truth > 0, spacing, meta.through_plane_axis(), logits)
        case.played = played_states(work / "played" / f"{name}.npz")
        cases.append(case)
    return cases


def played_states(path: Path) -> list:
    """What play_clicks.py saved for a case: (packed mask, clicks so far) after each click."""
    if not path.exists():
        return []
    saved = np.load(path)
    clicks = [Click(tuple(int(v) for v in row[:3]), bool(row[3])) for row in saved["clicks"]]
    return [(packed, clicks[: k + 1]) for k, packed in enumerate(saved["masks"])]


def loss_of(logits, target, window, outside_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy over the crop (``outside_weight`` for pixels outside the click's window,
    which a click never changes at inference) plus Dice inside the window."""
    weight = None if outside_weight == 1.0 else window + outside_weight * (1 - window)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
    p = torch.sigmoid(logits) * window
    t = target * window
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + dice


def train_mode_frozen_norm(net: torch.nn.Module) -> None:
    net.train()
    for layer in net.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clicks"))
    parser.add_argument("--member", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True, help="stop after this step")
    parser.add_argument("--total-steps", type=int, required=True, help="the schedule's length")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per batch")
    parser.add_argument("--slices", type=int, default=4, help="slices per episode")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=25)
    parser.add_argument(
        "--restart-at", type=int, default=0, help="a warm restart: the cosine starts at this step"
    )
    parser.add_argument("--window-mm", type=float, default=None, help="the click's window")
    parser.add_argument(
        "--played-share",
        type=float,
        default=0.0,
        help="share of episodes from the states play_clicks.py saved (iterative training)",
    )
    parser.add_argument(
        "--outside-weight",
        type=float,
        default=1.0,
        help="the cross-entropy's weight outside the click's window (1: all pixels alike)",
    )
    return parser.parse_args(argv)


def learning_rate(args, step: int) -> float:
    """Cosine decay from ``--lr`` over ``--restart-at .. --total-steps``."""
    phase = (step - args.restart_at) / (args.total_steps - args.restart_at)
    return args.lr * 0.5 * (1 + np.cos(np.pi * min(phase, 1.0)))


def save_run(run: Path, net, optimizer, progress: dict) -> None:
    """Weights (written aside, then renamed), optimiser state, then progress: a run killed
    at any moment goes on from its last save."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(run / ".weights.tmp"))
    save_optimizer(optimizer, run)
    (run / ".weights.tmp").replace(run / "weights.safetensors")
    (run / "progress.json").write_text(json.dumps(progress))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    default = load_model("default")
    model = ClickModel.from_segmenter(default)
    model.window_mm = args.window_mm or model.window_mm
    net, transform = model.members[args.member], model.transforms[args.member]
    run = args.work / f"member{args.member}"
    run.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    progress = dict(step=0, seconds=0.0, losses=[])
    if (run / "progress.json").exists():
        progress = json.loads((run / "progress.json").read_text())
        net.load_state_dict(load_file(str(run / "weights.safetensors")))
        load_optimizer(optimizer, run)
    started = time.perf_counter()
    cases = load_cases(default_split(default)["train"], args.work)
    print(f"{len(cases)} cases loaded in {time.perf_counter() - started:.0f} s", flush=True)
    axis_of = lambda case: view_axis(case.slice_axis, transform.view)  # noqa: E731
    sampler = EpisodeSampler(
        cases,
        transform,
        axis_of,
        model.window_mm,
        model.crop,
        slices_per_episode=args.slices,
        played_share=args.played_share,
    )
    train_mode_frozen_norm(net)
    window_loss = []
    while progress["step"] < args.steps:
        step, tick = progress["step"], time.perf_counter()
        lr = learning_rate(args, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, w = sampler.batch(np.random.default_rng([args.member, step]), args.episodes)
        loss = loss_of(net(x), y, w, args.outside_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress["step"], progress["seconds"] = (
            step + 1,
            progress["seconds"] + time.perf_counter() - tick,
        )
        window_loss.append(loss.item())
        if progress["step"] % args.save_every == 0 or progress["step"] == args.steps:
            progress["losses"].append([progress["step"], float(np.mean(window_loss))])
            print(
                f"step {progress['step']} loss {np.mean(window_loss):.4f} lr {lr:.2e} "
                f"{progress['seconds'] / progress['step']:.2f} s/step",
                flush=True,
            )
            window_loss = []
            save_run(run, net, optimizer, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
