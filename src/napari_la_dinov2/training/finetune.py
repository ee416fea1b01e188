"""Fine-tuning: a model (registry name, checkpoint or the embedded default) + annotated cases +
a config -> a run directory with the best and last checkpoints.

Reads top to bottom: resolve the config, split by patient, build the model and optimiser,
then epochs of (sample slices -> augment -> step) followed by a validation on whole volumes
through the same Predictor users run, keeping the best checkpoint by validation Dice. A
multi-view model (``preprocessing["views"]``) trains each member on slices cut along its own
view, all in the same steps (the loss is their mean), and is validated as a whole.

Run directory::

    config.json     the fully resolved config (re-run with it)
    split.json      train / val / test case names
    history.csv     epoch, train_loss, val_dice, lr, seconds
    curves.png      loss and validation Dice against epoch
    best/           checkpoint with the best validation Dice (safetensors + config.json)
    last/           checkpoint of the last epoch + optimiser state, to resume

Every file is written atomically, so stopping (the stop flag) or killing the process leaves the
previous best checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CancelledError, InputError
from ..inference import Predictor, autocast_dtype, resolve_device
from ..metrics import dice
from ..models import LASegmenter, get_spec, load_model, save_checkpoint
from ..preprocess import slice_transforms
from . import distributed
from .cases import Case, split_cases, write_split
from .feature_cache import (
    CachedDecoder,
    FeatureCache,
    TokenStore,
    shared_cache,
    token_batch,
    validate_cached,
)
from .slices import Augmentation, PreparedCase, SliceSampler, make_batch
from .state import (
    atomic_write_text,
    load_optimizer,
    plot_curves,
    read_history,
    save_optimizer,
    write_history,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What a fine-tuning run does. ``None`` means the paper's default for the model family
    (DINOv2: lr 1e-3, 35 epochs, batch 32; CNNs: lr 1e-4, 75 epochs, batch 24)."""

    model: str = "unet"
    model_kwargs: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    output_dir: str = "runs/finetune"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    steps_per_epoch: int | None = None  # None: one pass over the training slices
    loss: str = "bce"  # "bce" (paper) or "bce_dice"
    schedule: str = "constant"  # "constant" (paper) or "cosine"
    weight_decay: float = 0.0
    freeze_backbone: bool = True
    patience: int = 10  # epochs without a better validation Dice before stopping
    min_epochs: int = 1
    foreground_fraction: float = 0.6
    augment: bool = True
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0  # initial weights, sampling and augmentation
    # The patient split's seed; None: ``seed``. Set it to train several models (an ensemble)
    # with different seeds on the same split, so their validation patients stay unseen.
    split_seed: int | None = None
    device: str = "auto"
    precision: str = "auto"
    val_batch_size: int = 16
    resume: bool = False
    pretrained: bool = True
    # Frozen DINOv2 backbone: token maps computed once and reused (feature_cache.py). "auto"
    # uses the cache whenever the backbone is frozen; in cache mode the only augmentation is an
    # exact left-right flip.
    feature_cache: str = "auto"  # "auto", "on" or "off"
    feature_cache_dir: str | None = None  # also keep token maps on disk, across processes
    feature_cache_gb: float = 4.0  # memory budget of the process-wide cache

    def resolved(self, family_defaults: dict) -> TrainConfig:
        updates = {
            k: family_defaults[k]
            for k in ("epochs", "batch_size", "lr")
            if getattr(self, k) is None
        }
        config = dataclasses.replace(self, **updates)
        if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
            raise InputError("epochs and batch size must be at least 1 and lr positive.")
        if config.loss not in ("bce", "bce_dice"):
            raise InputError(f"loss must be 'bce' or 'bce_dice', not {config.loss!r}.")
        if config.schedule not in ("constant", "cosine"):
            raise InputError(f"schedule must be 'constant' or 'cosine', not {config.schedule!r}.")
        if config.feature_cache not in ("auto", "on", "off"):
            raise InputError(
                f"feature_cache must be 'auto', 'on' or 'off', not {config.feature_cache!r}."
            )
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_val_dice: float
    stopped: bool
    model: LASegmenter | None = None  # the model as the last epoch left it (in memory)


def _is_set(stop) -> bool:
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())


def _make_loss(kind: str):
    bce = torch.nn.BCEWithLogitsLoss()
    if kind == "bce":
        return bce
    from monai.losses import DiceLoss

    soft_dice = DiceLoss(sigmoid=True, batch=True)
    return lambda logits, target: bce(logits, target) + soft_dice(logits, target)


def validate(
    model: LASegmenter, cases: list[Case], device, batch_size: int = 16, stop=None
) -> float:
    """Mean 3D Dice over whole volumes, with the same inference and post-processing as users."""
    predictor = Predictor(model, device=device, batch_size=batch_size)
    scores = []
    for case in cases:
        pred = predictor.predict(case.image, case.meta, cancel=stop)
        scores.append(dice(pred, case.labels))
    model.train()
    return float(np.mean(scores))


def _initial_model(config: TrainConfig) -> LASegmenter:
    kwargs = dict(config.model_kwargs)
    model = load_model(config.model, pretrained=config.pretrained, **kwargs)
    if config.preprocessing:
        model.preprocessing.update(config.preprocessing)
    try:
        slice_transforms(model.preprocessing)
    except ValueError as error:
        raise InputError(f"preprocessing: {error}.") from None
    model.branches()  # views that do not fit the network: one clear error before any file
    wanted = model.preprocessing["channels"]
    in_channels = model.net.rebuild_kwargs().get("in_channels", wanted)
    if in_channels != wanted:  # e.g. 2.5D input asked of a 1-channel network
        raise InputError(
            f"the network takes {in_channels} input channel(s) but the preprocessing gives "
            f"{wanted}; set model_kwargs.in_channels={wanted}."
        )
    if hasattr(model.net, "set_backbone_trainable"):
        model.net.set_backbone_trainable(not config.freeze_backbone)
    return model


class ViewBranches(torch.nn.Module):
    """The networks of a model's views as one module (what DDP wraps): ``forward(x_1, ...,
    x_n)`` gives each network's logits for its own view's batch."""

    def __init__(self, networks: list[torch.nn.Module]):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, *batches: torch.Tensor) -> list[torch.Tensor]:
        return [net(x) for net, x in zip(self.networks, batches, strict=True)]


def _uses_feature_cache(config: TrainConfig, model: LASegmenter) -> bool:
    frozen = getattr(model.net, "freeze_backbone", False) and hasattr(model.net, "decode")
    if config.feature_cache == "on" and not frozen:
        raise InputError("feature_cache 'on' needs a DINOv2 model with a frozen backbone.")
    return frozen and config.feature_cache != "off"


def finetune(
    cases: list[Case],
    config: TrainConfig,
    *,
    val_cases: list[Case] | None = None,
    progress=None,
    stop=None,
    cache: FeatureCache | None = None,
) -> RunResult:
    """Train ``config.model`` on ``cases``; see the module docstring for what is written.

    ``val_cases`` given: all of ``cases`` train. Otherwise ``cases`` are split by patient with
    ``config.split`` (the test part is left out and named in split.json). With a single case
    there is nothing to hold out: validation then runs on the training case, which says how
    well the model fits the corrections, not how it generalises (recorded in config.json).
    ``progress(event)`` receives dicts (kind 'step' and 'epoch'; 'features' with done/total
    while a frozen backbone's token maps are computed); ``stop`` is a
    threading.Event or callable: when set, the run ends after the current step, keeping the best
    checkpoint so far. ``cache``: the feature cache to use (default: the process-wide one).
    """
    if not cases:
        raise InputError("no annotated cases to train on.")
    rank, world = distributed.rank_and_world()
    run_dir = Path(config.output_dir).expanduser()
    by_name = {c.name: c for c in cases}
    if len(by_name) != len(cases):
        raise InputError("two cases have the same name; give each case a unique name.")
    if val_cases is not None:
        split = {"train": list(by_name), "val": [c.name for c in val_cases], "test": []}
        train_cases, val_set = list(cases), list(val_cases)
    else:
        split = split_cases(
            list(by_name),
            config.split,
            config.seed if config.split_seed is None else config.split_seed,
        )
        train_cases = [by_name[n] for n in split["train"]]
        val_set = [by_name[n] for n in split["val"]]
    val_on_train = not val_set
    if val_on_train:
        val_set = train_cases

    resume_dir = run_dir / "last"
    resuming = config.resume and (resume_dir / "model.safetensors").is_file()
    torch.manual_seed(config.seed)  # before building: the seed also fixes a new head's weights
    model = load_model(resume_dir) if resuming else _initial_model(config)
    spec = get_spec(model.model_name)
    # Cases the starting model already learnt from (e.g. the embedded model's 64): a fine-tuned
    # model has seen them too, so ``LASegmenter.unseen`` must not offer them as unseen.
    seen_before = {k: list(model.provenance.get(k, [])) for k in ("trained_on", "validated_on")}
    base_display_name = model.provenance.get("base_display_name", model.display_name)
    model.provenance["base_display_name"] = base_display_name
    config = config.resolved(spec.training)
    device = resolve_device(config.device)
    amp_dtype = autocast_dtype(device, config.precision)
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    use_cache = _uses_feature_cache(config, model)

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config.to_dict() | {
            "model_name": model.model_name,
            "val_on_train": val_on_train,
            "world_size": world,
            "feature_cache_used": use_cache,
        }
        atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
        write_split(split, run_dir / "split.json")

    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError("the model has no trainable parameters with these settings.")
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    start_epoch, best = 1, -1.0
    if resuming:
        load_optimizer(optimizer, resume_dir)
        history = read_history(run_dir / "history.csv")
        start_epoch = (history[-1]["epoch"] + 1) if history else 1
        best = max((row["val_dice"] for row in history), default=-1.0)
    branches = model.branches()  # (view, network): one, or one per member of a multi-view model
    views = [view for view, _ in branches]
    # Each view with its own transform (members of a multi-view model may fit differently).
    transforms = slice_transforms(model.preprocessing)
    transform = transforms[0]
    prepared_by_view = [
        [PreparedCase.of(c, view_transform, view) for c in train_cases]
        for view, view_transform in zip(views, transforms, strict=True)
    ]
    samplers = [SliceSampler(p, config.foreground_fraction) for p in prepared_by_view]
    prepared = prepared_by_view[0]
    augmentation = Augmentation() if config.augment else None
    if use_cache:  # backbone once per case (and mirrored case); then only the decoder trains
        if cache is None:
            cache = shared_cache(int(config.feature_cache_gb * 2**30), config.feature_cache_dir)
        store = TokenStore(
            model.net, transform, model.preprocessing, device, cache,
            batch_size=config.val_batch_size, amp_dtype=amp_dtype, stop=stop,
        )  # fmt: skip
        report = progress if rank == 0 else None
        train_tokens, flip_tokens, val_tokens = store.tokens_for_run(
            prepared, val_set, flips=config.augment, progress=report, view=views[0]
        )
        train_model = distributed.wrap(CachedDecoder(model.net, transform.size), device)
    else:
        train_model = distributed.wrap(ViewBranches([net for _, net in branches]), device)
    steps = config.steps_per_epoch or max(1, len(samplers[0]) // (config.batch_size * world))
    total_steps = steps * config.epochs
    loss_fn = _make_loss(config.loss)
    rng = np.random.default_rng(config.seed)
    for _ in range(1, start_epoch):  # same slice order on resume as without a break
        for sampler in samplers:
            sampler.epoch(rng, steps * config.batch_size * world)

    stopped, epochs_since_best = False, 0
    best_dir, last_dir = run_dir / "best", run_dir / "last"
    title = f"{model.display_name} fine-tuned on {len(train_cases)} case(s)"
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        picks = [sampler.epoch(rng, steps * config.batch_size * world) for sampler in samplers]
        losses = []
        for step in range(steps):
            if _is_set(stop):
                stopped = True
                break
            offset = (step * world + rank) * config.batch_size
            batches = [view_picks[offset : offset + config.batch_size] for view_picks in picks]
            if use_cache:
                pairs = [token_batch(train_tokens, flip_tokens, prepared, batches[0], generator)]
            else:
                pairs = [
                    make_batch(cases_of_view, batch, view_transform, augmentation, generator)
                    for cases_of_view, batch, view_transform in zip(
                        prepared_by_view, batches, transforms, strict=True
                    )
                ]
            xs = [x.to(device) for x, _ in pairs]
            if config.schedule == "cosine":
                done = (epoch - 1) * steps + step
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + np.cos(np.pi * done / total_steps))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = train_model(*xs)
            outputs = [outputs] if use_cache else outputs
            loss = torch.stack(
                [
                    loss_fn(logits.float(), y.to(device))
                    for logits, (_, y) in zip(outputs, pairs, strict=True)
                ]
            ).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress and rank == 0:
                progress(
                    {
                        "kind": "step",
                        "epoch": epoch,
                        "epochs": config.epochs,
                        "step": step + 1,
                        "steps": steps,
                        "loss": losses[-1],
                    }
                )
        if not losses:
            break
        distributed.broadcast_buffers(model)  # BatchNorm statistics: the same on every rank
        try:
            if use_cache:
                val_dice = validate_cached(
                    model, val_set, val_tokens, device, config.val_batch_size, amp_dtype, stop=stop
                )
            else:
                val_dice = validate(model, val_set, device, config.val_batch_size, stop)
        except CancelledError:
            stopped = True
            break
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_dice": val_dice,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        improved = val_dice > best
        if improved:
            best, epochs_since_best = val_dice, 0
        else:
            epochs_since_best += 1
        if rank == 0:
            provenance = {
                "trained_on": list(dict.fromkeys(seen_before["trained_on"] + split["train"])),
                "validated_on": list(dict.fromkeys(seen_before["validated_on"] + split["val"])),
                "this_run": {"trained_on": split["train"], "validated_on": split["val"]},
                "epoch": epoch,
                "val_dice": val_dice,
                "val_on_train": val_on_train,
                "base_model": config.model,
                "train_config": config.to_dict(),
                # Shown in the widgets' model lists: which base model, trained where.
                "display_name": f"{base_display_name} + {run_dir.name}",
            }
            if improved:
                save_checkpoint(model, best_dir, provenance)
            save_checkpoint(model, last_dir, provenance)
            save_optimizer(optimizer, last_dir)
            write_history(history, run_dir / "history.csv")
            plot_curves(history, run_dir / "curves.png", title)
        if progress and rank == 0:
            progress(
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "epochs": config.epochs,
                    "train_loss": row["train_loss"],
                    "val_dice": val_dice,
                    "best_val_dice": best,
                    "seconds": row["seconds"],
                }
            )
        if stopped:
            break
        if epochs_since_best >= config.patience and epoch >= config.min_epochs:
            log.info(
                "early stop at epoch %d: no better validation Dice for %d epochs",
                epoch,
                config.patience,
            )
            break
    distributed.barrier()
    if not (best_dir / "model.safetensors").is_file():
        raise CancelledError("stopped before the first epoch ended; no checkpoint was written")
    return RunResult(run_dir, best_dir, last_dir, history, best, stopped, model)
