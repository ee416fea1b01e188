"""A fine-tuning run set up before its first epoch (:func:`setup_run`): the patient split, the
model (new, trained, or resumed), the run's files (config.json, split.json), the batches (slices,
or a frozen backbone's cached token maps), the optimiser and its schedule, and what every
checkpoint records. :func:`~.finetune.finetune` then runs the epochs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..grid import training_grid
from ..inference import Predictor, resolve_device
from ..models import MODEL_SPECS, LASegmenter, load_model
from . import distributed
from .batches import SliceBatches
from .cases import Case, split_cases, write_split
from .feature_cache import shared_cache
from .schedule import make_schedule, saved_position
from .state import (
    atomic_write_text,
    clear_replaced_run,
    load_optimizer,
    read_history,
    recover_after_kill,
)
from .token_batches import TokenBatches
from .train_config import TrainConfig


def _make_loss(kind: str):
    bce = torch.nn.BCEWithLogitsLoss()
    if kind == "bce":
        return bce
    from monai.losses import DiceLoss

    soft_dice = DiceLoss(sigmoid=True, batch=True)
    return lambda logits, target: bce(logits, target) + soft_dice(logits, target)


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
        model = load_model(
            config.model,
            pretrained=config.pretrained,
            backbone_source=config.backbone_source,
            preprocessing=config.preprocessing or None,
            **config.model_kwargs,
        )
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


@dataclass
class Run:
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


def setup_run(cases, config: TrainConfig, val_cases, replay, progress, stop, cache) -> Run:
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
            "model_name": model.model_name,
            "val_on_train": val_on_train,
            "world_size": world,
            "feature_cache_used": use_cache,
        }
        _write_run_files(run_dir, config, record, split)
    predictor = Predictor(
        model,
        device=device,
        batch_size=config.val_batch_size,
        precision=config.precision,
    )
    source = dict(train_cases=train_cases, val_set=val_set, seed=config.seed * 1000 + rank)
    batches = _batches(model, predictor, config, use_cache, cache, report, stop, **source)
    module = distributed.wrap(batches.module, device)
    steps = config.steps_per_epoch or max(1, len(batches) // (config.batch_size * world))
    history = read_history(run_dir / "history.csv") if config.resume else []
    optimizer, scheduler = _optimisation(model, config, run_dir, steps, len(history))
    return Run(
        config=config,
        run_dir=run_dir,
        model=model,
        predictor=predictor,
        batches=batches,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        resumed_history=history,
        loss_fn=_make_loss(config.loss),
        val_set=val_set or train_cases,
        provenance=_provenance_base(model, config, split, val_on_train, run_dir, train_cases),
        steps=steps,
        rank=rank,
        world=world,
        report=report,
        stop=stop,
    )


def _write_run_files(run_dir: Path, config: TrainConfig, record: dict, split: dict) -> None:
    """config.json (the resolved settings) and split.json; a new run first clears the
    checkpoints of a run it replaces (--overwrite)."""
    if not config.resume:
        clear_replaced_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(record, indent=2) + "\n")
    write_split(split, run_dir / "split.json")


def _batches(
    model, predictor, config, use_cache, cache, report, stop, *, train_cases, val_set, seed
):
    """The run's batches: a frozen backbone's cached token maps, or augmented slices."""
    if not use_cache:
        return SliceBatches(
            model,
            train_cases,
            augment=config.augment,
            seed=seed,
            sampling=config.sampling(),
        )
    if cache is None:
        cache = shared_cache(int(config.feature_cache_gb * 2**30), config.feature_cache_dir)
    return TokenBatches(
        predictor,
        train_cases,
        val_set or train_cases,
        cache=cache,
        flips=config.augment,
        generator=torch.Generator().manual_seed(seed),
        sampling=config.sampling(),
        progress=report,
        stop=stop,
    )


def _optimisation(model, config: TrainConfig, run_dir: Path, steps: int, epochs_done: int):
    """Adam on the trainable parameters and its learning-rate schedule over the whole run; a
    resumed run gets back the optimiser's state and the schedule where it stopped."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError("the model has no trainable parameters with these settings.")
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    position = 0
    if config.resume:
        load_optimizer(optimizer, run_dir / "last")
        position = saved_position(run_dir / "last", default=epochs_done * steps)
    return optimizer, make_schedule(optimizer, config.schedule, steps * config.epochs, position)


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
