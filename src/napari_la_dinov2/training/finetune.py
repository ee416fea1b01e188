"""Fine-tuning: a model (registry name, checkpoint or the embedded default) + annotated cases +
a config -> a run directory with the best and last checkpoints.

:func:`finetune` reads top to bottom: :func:`~.run_setup.setup_run` splits by patient, builds
the model and writes the run's settings, then epochs of (get a batch -> step) followed by a
validation on whole volumes through the same Predictor users run, keeping the best checkpoint
by validation Dice. A batch comes from one of two sources: slices of every branch, augmented (:class:`~.batches.SliceBatches`;
a multi-view model trains each member on slices of its own view in the same steps, the loss is
their mean), or a frozen DINOv2 backbone's cached token maps
(:class:`~.token_batches.TokenBatches`).

Run directory::

    config.json     the fully resolved config (re-run with it)
    split.json      train / val / test case names
    history.csv     epoch, train_loss, val_dice, lr, seconds
    curves.png      loss and validation Dice against epoch
    best/           checkpoint with the best validation Dice (safetensors + config.json)
    last/           checkpoint of the last epoch + optimiser and schedule state, to resume

Every file is written atomically, so stopping (the stop flag) or killing the process leaves the
previous best checkpoint intact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CancelledError, InputError, is_cancelled
from ..inference import Predictor
from ..models import LASegmenter
from ..scoring.metrics import dice
from . import distributed
from .cases import Case
from .events import EpochDone, StepDone
from .feature_cache import FeatureCache
from .run_setup import Run, setup_run
from .state import save_run_epoch
from .step_stop import stop_within_steps
from .train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_val_dice: float
    stopped: bool
    model: LASegmenter | None = None  # the model as the last epoch left it (in memory)


def evaluate(predictor: Predictor, cases: list[Case], batches=None, stop=None) -> float:
    """Mean 3D Dice over whole volumes through the Predictor users run (``batches`` may feed
    it cached token maps instead of running the backbone)."""
    scores = []
    was_training = predictor.model.training
    predictor.model.eval()
    try:
        for case in cases:
            prepared = predictor.prepare(case.image, case.meta)
            source = batches.logits_source(predictor, case) if batches is not None else None
            probabilities = predictor.probabilities(prepared, logits_of=source, cancel=stop)
            scores.append(dice(predictor.labels(probabilities, prepared), case.labels))
    finally:
        predictor.model.train(was_training)
    return float(np.mean(scores))


def validate(model: LASegmenter, cases: list[Case], device, batch_size=16, stop=None) -> float:
    """Mean 3D Dice of ``model`` over ``cases``, as users would segment them."""
    return evaluate(Predictor(model, device=device, batch_size=batch_size), cases, stop=stop)


def _train_mode(model: LASegmenter, config: TrainConfig) -> None:
    """Training mode; with ``config.freeze_norm_stats`` the BatchNorm layers stay in eval mode,
    so their running statistics stay those of the model's training (their scale and shift
    still learn)."""
    model.train()
    if config.freeze_norm_stats:
        for layer in model.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.eval()


def _train_step(module, optimizer, loss_fn, xs, ys, device, amp_dtype) -> float:
    """One optimiser step on one batch of every branch; the loss is the branches' mean."""
    xs = [x.to(device) for x in xs]
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        outputs = module(*xs)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    loss = torch.stack(
        [loss_fn(out.float(), y.to(device)) for out, y in zip(outputs, ys, strict=True)]
    ).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _train_epoch(run: Run, epoch: int, rng) -> tuple[list[float], bool]:
    """One epoch of steps: the losses, and whether the stop flag ended it early."""
    config, device = run.config, run.predictor.device
    _train_mode(run.model, config)  # evaluate() after each epoch puts the model in eval mode
    run.batches.new_epoch(rng, run.slices_per_epoch)
    losses = []
    with stop_within_steps(run.module, run.stop, enabled=run.world == 1):
        for step in range(run.steps):
            if is_cancelled(run.stop):
                return losses, True
            start = (step * run.world + run.rank) * config.batch_size
            xs, ys = run.batches.batch(start, config.batch_size)
            try:
                loss = _train_step(
                    run.module, run.optimizer, run.loss_fn, xs, ys, device, run.predictor.dtype
                )
            except CancelledError:  # the flag went up inside the step: the weights are unchanged
                return losses, True
            losses.append(loss)
            run.scheduler.step()
            if run.report:
                run.report(StepDone(epoch, config.epochs, step + 1, run.steps, loss))
    return losses, False


def finetune(
    cases: list[Case],
    config: TrainConfig,
    *,
    val_cases: list[Case] | None = None,
    replay: list[Case] | None = None,
    progress=None,
    stop=None,
    cache: FeatureCache | None = None,
) -> RunResult:
    """Train ``config.model`` on ``cases``; see the module docstring for what is written.

    With a single case there is nothing to hold out: validation then runs on the training
    case, which says how well the model fits the corrections, not how it generalises (recorded
    in config.json). ``replay``: earlier cases mixed in at ``config.replay_share`` of the slices,
    so that a correction round does not make the model forget them. A case's ``prediction``
    (the model's mask before the user corrected it) makes its corrected slices weigh
    ``config.correction_weight`` times the untouched ones. ``progress(event)`` receives
    :mod:`.events` (``StepDone``, ``EpochDone``; ``FeaturesComputed`` while a frozen backbone's token maps are computed); ``stop`` is a
    threading.Event or callable: when set, the run ends inside the current step, keeping the
    best checkpoint so far. ``cache``: the feature cache to use (default: the process-wide one).
    """
    if not cases:
        raise InputError("no annotated cases to train on.")
    run = setup_run(cases, config, val_cases, replay, progress, stop, cache)
    history = list(run.resumed_history)
    rng = np.random.default_rng(run.config.seed)
    for _ in history:  # resumed: the same slice order as without a break
        run.batches.new_epoch(rng, run.slices_per_epoch)
    best, stopped = _run_epochs(run, history, rng)
    distributed.barrier()
    best_dir, last_dir = run.run_dir / "best", run.run_dir / "last"
    if not (best_dir / "model.safetensors").is_file():
        raise CancelledError("stopped before the first epoch ended; no checkpoint was written")
    return RunResult(
        run_dir=run.run_dir,
        best_checkpoint=best_dir,
        last_checkpoint=last_dir,
        history=history,
        best_val_dice=best,
        stopped=stopped,
        model=run.model,
    )


def _run_epochs(run: Run, history: list[dict], rng) -> tuple[float, bool]:
    """Epochs after those in ``history`` (which grows by one row each) until the last, the
    patience runs out or the stop flag is raised: the best validation Dice, and whether the
    stop flag ended the run."""
    best = max((row["val_dice"] for row in history), default=-1.0)
    stopped, epochs_since_best = False, 0
    for epoch in range(len(history) + 1, run.config.epochs + 1):
        started = time.perf_counter()
        losses, stopped = _train_epoch(run, epoch, rng)
        if not losses:
            break
        distributed.broadcast_buffers(run.model)  # BatchNorm statistics: the same on every rank
        try:
            val_dice = evaluate(run.predictor, run.val_set, run.batches, run.stop)
        except CancelledError:
            stopped = True
            break
        lr = run.optimizer.param_groups[0]["lr"]
        seconds = time.perf_counter() - started
        row = dict(epoch=epoch, train_loss=float(np.mean(losses)), val_dice=val_dice, lr=lr)
        history.append(row | {"seconds": seconds})
        improved = val_dice > best
        best, epochs_since_best = (val_dice, 0) if improved else (best, epochs_since_best + 1)
        _record_epoch(run, history, best, improved)
        if stopped:
            break
        if epochs_since_best >= run.config.patience and epoch >= run.config.min_epochs:
            log.info(
                "early stop at epoch %d: no better validation Dice for %d epochs",
                epoch,
                run.config.patience,
            )
            break
    return best, stopped


def _record_epoch(run: Run, history: list[dict], best: float, improved: bool) -> None:
    """The last epoch's checkpoints and history written (by rank 0), and its EpochDone
    reported."""
    row = history[-1]
    if run.rank == 0:
        provenance = {**run.provenance, "epoch": row["epoch"], "val_dice": row["val_dice"]}
        save_run_epoch(
            run.run_dir, run.model, run.optimizer, run.scheduler, history, provenance, improved
        )
    if run.report:
        run.report(
            EpochDone(
                epoch=row["epoch"],
                epochs=run.config.epochs,
                train_loss=row["train_loss"],
                val_dice=row["val_dice"],
                best_val_dice=best,
                seconds=row["seconds"],
            )
        )
