"""`la-dinov2 train --cases FOLDER --model NAME --out RUN_DIR`: fine-tune a model on annotated cases.

Settings: the paper's defaults for the model family, then a YAML config file (``--config``),
then ``--model``/``--out``/``--resume``/``--device``, then ``--set key=value`` (last wins). The
run directory gets the fully resolved ``config.json`` (a valid ``--config`` to re-run with), the
split, the history, the curves and the best and last checkpoints.

Several processes: ``torchrun --nproc_per_node N -m napari_la_dinov2.cli train ...`` (DDP; NCCL
on GPUs, gloo on CPUs); every rank reads the cases, only rank 0 writes files and shows bars.
"""

from __future__ import annotations

import argparse
import sys


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="CFG.yaml", help="settings file (YAML or JSON)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override a setting, e.g. --set lr=1e-4 epochs=20 model_kwargs.channels=[8,16,32]",
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on a folder of annotated cases",
        description="Fine-tune a model on image/label pairs (images/ + labels/ subfolders, or "
        "<id>.nii.gz beside <id>_label.nii.gz), split by patient 70/10/20.",
    )
    parser.add_argument("--cases", required=True, metavar="FOLDER", help="annotated cases")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="registry name (see `la-dinov2 models`), 'default', a checkpoint folder or a hub "
        "repo id (default: the config file's, else unet)",
    )
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument(
        "--resume", action="store_true", help="continue from RUN_DIR/last (same settings)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing run in RUN_DIR"
    )
    parser.add_argument(
        "--backbone-source",
        metavar="DIR_OR_REPO",
        help="a pretrained backbone you trust (local folder with safetensors, or a repo)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda[:N], mps (default: auto)")
    add_config_arguments(parser)
    return parser


def resolve_train_config(args: argparse.Namespace):
    from ..training.train_config_file import apply_overrides, load_config_file, train_config_from

    settings = load_config_file(args.config)
    given = (
        ("model", args.model),
        ("output_dir", args.out),
        ("device", args.device),
        ("backbone_source", getattr(args, "backbone_source", None)),
    )
    for key, value in given:
        if value is not None:
            settings[key] = value
    if args.resume:
        settings["resume"] = True
    return train_config_from(apply_overrides(settings, args.overrides))


class ProgressBars:
    """tqdm bars on stderr for finetune's progress events (features, steps, epochs)."""

    def __init__(self, enabled: bool = True, prefix: str = ""):
        self.enabled, self.prefix, self.bar = enabled, prefix, None

    def _new(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)

    def __call__(self, event) -> None:
        from ..training.events import EpochDone, FeaturesComputed, StepDone

        if not self.enabled:
            return
        if isinstance(event, FeaturesComputed):
            if self.bar is None or event.done == 1:
                self._new(event.total, f"{self.prefix}backbone features", "map")
            self.bar.update(event.done - self.bar.n)
        elif isinstance(event, StepDone):
            if self.bar is None or event.step == 1:
                self._new(event.steps, f"{self.prefix}epoch {event.epoch}/{event.epochs}", "step")
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(loss=f"{event.loss:.4f}")
        elif isinstance(event, EpochDone):
            self.close()
            print(
                f"{self.prefix}epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.4f}, "
                f"val Dice {event.val_dice:.4f} (best {event.best_val_dice:.4f}), "
                f"{event.seconds:.0f} s",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def weights_digest(model) -> str:
    """Hash of every weight and buffer: equal on all ranks when DDP kept them in step."""
    from ..training.feature_cache import content_key

    items = sorted(model.state_dict().items())
    return content_key(*[part for name, tensor in items for part in (name, tensor.cpu())])


def run(args: argparse.Namespace) -> int:
    from ..inference import resolve_device
    from ..training import distributed, finetune, load_case_folder
    from ..training.state import check_run_dir

    config = resolve_train_config(args)  # bad settings fail before any process group or read
    check_run_dir(config.output_dir, resume=config.resume, overwrite=args.overwrite)
    resolve_device(config.device)
    distributed_run = distributed.init_from_env()
    try:
        rank, world = distributed.rank_and_world()
        config.device = distributed.local_device(config.device)
        cases = load_case_folder(args.cases)
        bars = ProgressBars(enabled=rank == 0)
        try:
            result = finetune(cases, config, progress=bars)
        finally:
            bars.close()
        if distributed_run:  # lets anyone check that the ranks trained one model
            digest = weights_digest(result.model)
            print(f"rank {rank}/{world}: last weights {digest}", file=sys.stderr)
        if rank == 0:
            state = "stopped" if result.stopped else "finished"
            print(
                f"{result.run_dir}: {state} after {len(result.history)} epoch(s); best "
                f"validation Dice {result.best_val_dice:.4f}; best checkpoint "
                f"{result.best_checkpoint}"
            )
    finally:
        if distributed_run:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
