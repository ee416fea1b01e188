"""What a fine-tuning run does: :class:`TrainConfig`, with the paper's defaults per family."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import InputError

# The quick correction round: 12 steps of 8 slices per branch, then one validation: 8-10 s with
# the embedded 3-view model on a quiet 2-core CPU (benchmarks/results/correction-loop-cpu.txt),
# well under a minute on a busy laptop. The rate is low because one case pulls the model toward
# its own bias: from a weak model, 12 steps at 1e-4 on one patient cost the next patient
# 0.35-0.85 Dice in each of 4 seeds, at 3e-5 0.07-0.30, while the corrected case gains about as
# much (correction_loop.py --round-lr).
QUICK_ROUND = dict(
    epochs=1, steps_per_epoch=12, batch_size=8, lr=3e-5, patience=1, freeze_norm_stats=True
)


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
    # BatchNorm layers keep the running statistics they were trained with. A round on one
    # case in small batches would otherwise overwrite them with that case's statistics: with
    # them updating, 12 steps at lr 1e-4 on one corrected case raised the weak model's 1 - Dice
    # on the next four patients from 0.19 to 0.28-0.35; frozen: 0.20 (correction_loop.py).
    freeze_norm_stats: bool = False
    # A slice the user corrected weighs this many untouched slices (the model's own guess).
    correction_weight: float = 4.0
    # Share of the slices drawn from replayed earlier cases (finetune's ``replay``).
    replay_share: float = 0.25
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
    # Where a pretrained backbone comes from when it is not the official repo (a local folder,
    # another repo): the user's explicit choice, never taken from a checkpoint's config.
    backbone_source: str | None = None
    # Frozen DINOv2 backbone: token maps computed once and reused (feature_cache.py). "auto"
    # uses the cache whenever the backbone is frozen; in cache mode the only augmentation is an
    # exact left-right flip.
    feature_cache: str = "auto"  # "auto", "on" or "off"
    feature_cache_dir: str | None = None  # also keep token maps on disk, across processes
    feature_cache_gb: float = 4.0  # memory budget of the process-wide cache

    @classmethod
    def quick_round(cls, **settings) -> TrainConfig:
        """A correction round that takes well under a minute on a 2-core CPU with the embedded
        default model (see benchmarks/correction_loop.py): one short epoch of small batches at
        a fine-tuning learning rate, the corrected slices weighted."""
        return cls(**{**QUICK_ROUND, **settings})

    def resolved(self, family_defaults: dict) -> TrainConfig:
        updates = {
            k: family_defaults[k]
            for k in ("epochs", "batch_size", "lr")
            if getattr(self, k) is None
        }
        config = dataclasses.replace(self, **updates)
        if (
            config.epochs < 1
            or config.batch_size < 1
            or not (math.isfinite(config.lr) and config.lr > 0)
        ):
            raise InputError("epochs and batch size must be at least 1 and lr a positive number.")
        if config.loss not in ("bce", "bce_dice"):
            raise InputError(f"loss must be 'bce' or 'bce_dice', not {config.loss!r}.")
        if config.schedule not in ("constant", "cosine"):
            raise InputError(f"schedule must be 'constant' or 'cosine', not {config.schedule!r}.")
        if config.feature_cache not in ("auto", "on", "off"):
            raise InputError(
                f"feature_cache must be 'auto', 'on' or 'off', not {config.feature_cache!r}."
            )
        if not config.correction_weight >= 1 or not 0 <= config.replay_share < 1:
            raise InputError("correction_weight must be >= 1 and replay_share in [0, 1).")
        for name in ("seed", "split_seed"):  # numpy's generators take 0 to 2^32 - 1 here
            value = getattr(config, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < 2**32):
                raise InputError(
                    f"{name} must be a whole number from 0 to 2^32 - 1, not {value!r}."
                )
        return config

    def sampling(self) -> dict:
        """How the slice sampler weighs slices (see ``slices.SliceSampler``)."""
        return dict(
            foreground_fraction=self.foreground_fraction,
            correction_weight=self.correction_weight,
            replay_share=self.replay_share,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
