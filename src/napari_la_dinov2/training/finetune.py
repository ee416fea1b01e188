"""Fine-tuning: a model (registry name, checkpoint or the embedded default) + annotated cases +
a config -> a run directory with the best and last checkpoints.

:func:`finetune` reads top to bottom: split by patient, build the model, write the run's
settings, then epochs of (get a batch -> step) followed by a validation on whole volumes
through the same Predictor users run, keeping the best checkpoint by validation Dice. A batch
comes from one of two sources: slices of every branch, augmented (:class:`~.batches.SliceBatches`;
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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CancelledError, InputError, is_cancelled
from ..grid import training_grid
from ..inference import Predictor, resolve_device
from ..metrics import dice
from ..models import MODEL_SPECS, LASegmenter, load_model
from . import distributed
from .batches import SliceBatches
from .cases import Case, split_cases, write_split
from .config import TrainConfig
from .events import EpochDone, StepDone
from .feature_cache import FeatureCache, shared_cache
from .schedule import make_schedule, saved_position
from .state import (
    atomic_write_text,
    clear_replaced_run,
    load_optimizer,
    read_history,
    recover_after_kill,
    save_run_epoch,
)
from .step_stop import stop_within_steps
from .token_batches import TokenBatches

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


def _make_loss(kind: str):
    bce = torch.nn.BCEWithLogitsLoss()
    if kind == "bce":
        return bce
    from monai.losses import DiceLoss

    soft_dice = DiceLoss(sigmoid=True, batch=True)
    return lambda logits, target: bce(logits, target) + soft_dice(logits, target)


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


def _split(cases, val_cases, config) -> tuple[dict, list[Case], list[Case]]:
    """The patient split and its training and validation cases. With ``val_cases`` all of
    ``cases`` train; else ``config.split`` (the test part is only named in split.json)."""
    by_name = {c.name: c for c in cases}
    if len(by_name) != len(cases):
        raise InputError("two cases have the same name; give each case a unique name.")
    if val_cases is not None:
        split = {"train": list(by_name), "val": [c.name for c in val_cases], "test": []}
        return split, list(cases), list(val_cases)
    seed = config.seed if config.split_seed is None else config.split_seed
    split = split_cases(list(by_name), config.split, seed)
    return split, [by_name[n] for n in split["train"]], [by_name[n] for n in split["val"]]


def _initial_model(config: TrainConfig, resume_dir: Path) -> LASegmenter:
    if config.resume:
        if not (resume_dir / "model.safetensors").is_file():
            raise InputError(
                f"--resume: {resume_dir} holds no checkpoint to resume from; start without "
                "--resume (or with --overwrite)."
            )
        return load_model(resume_dir, backbone_source=config.backbone_source)
    torch.manual_seed(config.seed)  # before building: the seed also fixes a new head's weights
    if config.model in MODEL_SPECS:  # a new network, built for the asked input
        model = load_model(config.model, pretrained=config.pretrained,
                           backbone_source=config.backbone_source,
                           preprocessing=config.preprocessing or None, **config.model_kwargs)  # fmt: skip
    else:
        model = load_model(config.model, backbone_source=config.backbone_source)
        model = _with_preprocessing(model, config.preprocessing)
    if hasattr(model.net, "set_backbone_trainable"):
        model.net.set_backbone_trainable(not config.freeze_backbone)
    return model


def _with_preprocessing(model: LASegmenter, overrides: dict) -> LASegmenter:
    """A trained model with another input (e.g. a larger input size): the same weights in a
    model rebuilt for it; an input the weights cannot take (other channels) is refused."""
    try:
        preprocessing = model.preprocessing.updated(overrides)
    except ValueError as error:
        raise InputError(f"preprocessing: {error}.") from None
    if preprocessing == model.preprocessing:
        return model
    config = model.config_dict()
    rebuilt = LASegmenter(model.model_name, config["model_kwargs"], preprocessing, model.provenance)
    try:
        rebuilt.load_state_dict(model.state_dict())
    except RuntimeError:
        raise InputError(
            f"the trained weights of {model.display_name!r} do not fit the new input "
            f"({preprocessing.channels} channels); keep the context it was trained with."
        ) from None
    return rebuilt


def _uses_feature_cache(config: TrainConfig, model: LASegmenter) -> bool:
    frozen = getattr(model.net, "freeze_backbone", False) and hasattr(model.net, "decode")
    if config.feature_cache == "on" and not frozen:
        raise InputError("feature_cache 'on' needs a DINOv2 model with a frozen backbone.")
    return frozen and config.feature_cache != "off"


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


@dataclass
class _Run:
    """What stays fixed through a run's epochs."""

    config: TrainConfig
    run_dir: Path
    model: LASegmenter
    predictor: Predictor
    batches: SliceBatches | TokenBatches
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    resumed_history: list[dict]  # the epochs a resumed run had done ([] for a new run)
    loss_fn: object
    val_set: list[Case]
    provenance: dict
    steps: int
    rank: int
    world: int
    report: object
    stop: object

    @property
    def slices_per_epoch(self) -> int:
        return self.steps * self.config.batch_size * self.world


def _setup(cases, config: TrainConfig, val_cases, replay, progress, stop, cache) -> _Run:
    """Split, model, run files, batches, optimiser and schedule of a run (resumed or new)."""
    rank, world = distributed.rank_and_world()
    report = progress if rank == 0 else None
    run_dir = Path(config.output_dir).expanduser()
    split, train_cases, val_set = _split(cases, val_cases, config)
    val_on_train = not val_set
    if replay:  # earlier cases, drawn at their share of each batch; not validated on
        train_cases = train_cases + [dataclasses.replace(c, replay=True) for c in replay]
        split = {**split, "replay": [c.name for c in replay]}
    if config.resume and rank == 0:
        recover_after_kill(run_dir)
    model = _initial_model(config, run_dir / "last")
    config = config.resolved(model.spec.training)
    device = resolve_device(config.device)
    use_cache = _uses_feature_cache(config, model)
    if rank == 0:
        record = config.to_dict() | {
            "model_name": model.model_name, "val_on_train": val_on_train, "world_size": world,
            "feature_cache_used": use_cache,
        }  # fmt: skip
        if not config.resume:  # a run it replaces (--overwrite) must not leave checkpoints
            clear_replaced_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(record, indent=2) + "\n")
        write_split(split, run_dir / "split.json")
    predictor = Predictor(model, device=device, batch_size=config.val_batch_size,
                          precision=config.precision)  # fmt: skip
    seed = config.seed * 1000 + rank
    if use_cache:
        if cache is None:
            cache = shared_cache(int(config.feature_cache_gb * 2**30), config.feature_cache_dir)
        batches = TokenBatches(
            predictor, train_cases, val_set or train_cases, cache=cache, flips=config.augment,
            generator=torch.Generator().manual_seed(seed), sampling=config.sampling(),
            progress=report, stop=stop,
        )  # fmt: skip
    else:
        batches = SliceBatches(model, train_cases, augment=config.augment, seed=seed,
                               sampling=config.sampling())  # fmt: skip
    module = distributed.wrap(batches.module, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError("the model has no trainable parameters with these settings.")
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.steps_per_epoch or max(1, len(batches) // (config.batch_size * world))
    history = read_history(run_dir / "history.csv") if config.resume else []
    position = 0
    if config.resume:  # the optimiser's state, then the schedule where it stopped
        load_optimizer(optimizer, run_dir / "last")
        position = saved_position(run_dir / "last", default=len(history) * steps)
    scheduler = make_schedule(optimizer, config.schedule, steps * config.epochs, position)
    provenance = _provenance_base(model, config, split, val_on_train, run_dir, train_cases)
    return _Run(
        config=config, run_dir=run_dir, model=model, predictor=predictor, batches=batches,
        module=module, optimizer=optimizer, scheduler=scheduler, resumed_history=history,
        loss_fn=_make_loss(config.loss), val_set=val_set or train_cases, provenance=provenance,
        steps=steps, rank=rank, world=world, report=report, stop=stop,
    )  # fmt: skip


def _train_epoch(run: _Run, epoch: int, rng) -> tuple[list[float], bool]:
    """One epoch of steps: the losses, and whether the stop flag ended it early."""
    config, device = run.config, run.predictor.device
    _train_mode(run.model, config)  # evaluate() after each epoch puts the model in eval mode
    run.batches.new_epoch(rng, run.slices_per_epoch)
    losses = []
    with stop_within_steps(run.module, run.stop, enabled=run.world == 1):
        for step in range(run.steps):
            if is_cancelled(run.stop):
                return losses, True
            xs, ys = run.batches.batch((step * run.world + run.rank) * config.batch_size,
                                       config.batch_size)  # fmt: skip
            try:
                loss = _train_step(run.module, run.optimizer, run.loss_fn, xs, ys, device,
                                   run.predictor.dtype)  # fmt: skip
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
    ``config.correction_weight`` times the untouched ones. ``progress(event)`` receives :mod:`.events` (``StepDone``, ``EpochDone``;
    ``FeaturesComputed`` while a frozen backbone's token maps are computed); ``stop`` is a
    threading.Event or callable: when set, the run ends inside the current step, keeping the
    best checkpoint so far. ``cache``: the feature cache to use (default: the process-wide one).
    """
    if not cases:
        raise InputError("no annotated cases to train on.")
    run = _setup(cases, config, val_cases, replay, progress, stop, cache)
    config = run.config
    history = list(run.resumed_history)
    best = max((row["val_dice"] for row in history), default=-1.0)
    rng = np.random.default_rng(config.seed)
    for _ in history:  # resumed: the same slice order as without a break
        run.batches.new_epoch(rng, run.slices_per_epoch)

    stopped, epochs_since_best = False, 0
    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        losses, stopped = _train_epoch(run, epoch, rng)
        if not losses:
            break
        distributed.broadcast_buffers(run.model)  # BatchNorm statistics: the same on every rank
        try:
            val_dice = evaluate(run.predictor, run.val_set, run.batches, stop)
        except CancelledError:
            stopped = True
            break
        history.append(dict(epoch=epoch, train_loss=float(np.mean(losses)), val_dice=val_dice,
                            lr=run.optimizer.param_groups[0]["lr"],
                            seconds=time.perf_counter() - started))  # fmt: skip
        improved = val_dice > best
        best, epochs_since_best = (val_dice, 0) if improved else (best, epochs_since_best + 1)
        if run.rank == 0:
            provenance = {**run.provenance, "epoch": epoch, "val_dice": val_dice}
            save_run_epoch(
                run.run_dir, run.model, run.optimizer, run.scheduler, history, provenance, improved
            )
        if run.report:
            row = history[-1]
            run.report(EpochDone(epoch, config.epochs, row["train_loss"], val_dice, best,
                                 row["seconds"]))  # fmt: skip
        if stopped:
            break
        if epochs_since_best >= config.patience and epoch >= config.min_epochs:
            log.info("early stop at epoch %d: no better validation Dice for %d epochs",
                     epoch, config.patience)  # fmt: skip
            break
    distributed.barrier()
    best_dir, last_dir = run.run_dir / "best", run.run_dir / "last"
    if not (best_dir / "model.safetensors").is_file():
        raise CancelledError("stopped before the first epoch ended; no checkpoint was written")
    return RunResult(run.run_dir, best_dir, last_dir, history, best, stopped, run.model)


def _provenance_base(model, config, split, val_on_train, run_dir, train_cases) -> dict:
    """What every checkpoint of the run records. The cases the starting model already learnt
    from (e.g. the embedded model's 64) stay listed: ``unseen`` must not offer them. The
    training grid is this run's (what the model was last fitted to): a region picked from one
    click spans its field of view."""
    base_name = model.provenance.get("base_display_name", model.display_name)
    seen = {k: list(model.provenance.get(k, [])) for k in ("trained_on", "validated_on")}
    return {
        "trained_on": list(
            dict.fromkeys(seen["trained_on"] + split["train"] + split.get("replay", []))
        ),
        "validated_on": list(dict.fromkeys(seen["validated_on"] + split["val"])),
        "this_run": {"trained_on": split["train"], "validated_on": split["val"]},
        "val_on_train": val_on_train,
        "training_grid": training_grid(case.meta for case in train_cases),
        "base_model": config.model,
        "base_display_name": base_name,
        "train_config": config.to_dict(),
        # Shown in the widgets' model lists: which base model, trained where.
        "display_name": f"{base_name} + {run_dir.name}",
    }
