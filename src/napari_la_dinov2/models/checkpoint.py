"""Checkpoints: a folder with ``model.safetensors`` and ``config.json`` that rebuilds the model.

``config.json`` names the registry model, the constructor arguments that rebuild its exact
architecture with no download, the preprocessing it was trained with, and its training
provenance. The same folder works as a local directory or as a Hugging Face hub repo
(``LASegmenter.from_pretrained`` / ``push_to_hub`` come from ``PyTorchModelHubMixin``).
Pickled checkpoints (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pkl``) are refused: unpickling
a file someone sent you can run any code.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..errors import InputError
from ..io import default_permissions
from ..preprocess import branch_preprocessing, views_of
from .registry import MODEL_SPECS, get_spec

CHECKPOINT_FORMAT = "napari-la-dinov2/1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
DEFAULT_MODEL_NAME = "default"


class LASegmenter(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="napari-la-dinov2",
    tags=["left-atrium", "cardiac-mri", "segmentation"],
):
    """A registry network plus the preprocessing it expects. ``forward(BxCxHxW) -> Bx1xHxW``."""

    def __init__(
        self,
        model: str,
        model_kwargs: dict | None = None,
        preprocessing: dict | None = None,
        provenance: dict | None = None,
        format: str = CHECKPOINT_FORMAT,
    ):
        super().__init__()
        if format != CHECKPOINT_FORMAT:
            raise InputError(f"checkpoint format {format!r} is not {CHECKPOINT_FORMAT!r}.")
        spec = get_spec(model)
        self.model_name = model
        self.family = spec.family
        try:
            self.net = spec.builder(**{**spec.defaults, **(model_kwargs or {})})
        except TypeError as error:  # e.g. a setting of another model: say which, not a trace
            raise InputError(f"model_kwargs do not fit the {model!r} model: {error}.") from None
        self.preprocessing = {**spec.preprocessing, **(preprocessing or {})}
        self.provenance = dict(provenance or {})
        self.branches()  # a views list that does not fit the network fails here, not later

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def branches(self) -> list[tuple[str, nn.Module]]:
        """``(view, network)`` pairs that inference and training run: the whole model on its
        one view, or each member of a multi-view ensemble on its own view (its logits are then
        averaged with the others' on the volume's grid)."""
        try:
            views = views_of(self.preprocessing)
            branch_preprocessing(self.preprocessing)  # a fits list that does not match views
        except ValueError as error:
            raise InputError(f"preprocessing: {error}.") from None
        if len(views) == 1:
            return [(views[0], self)]
        members = getattr(self.net, "members", None)
        if members is None or len(members) != len(views):
            count = "no members" if members is None else f"{len(members)} members"
            raise InputError(
                f"preprocessing names {len(views)} views but the {self.model_name!r} network has "
                f"{count}; a multi-view model needs one member per view (unet_ensemble)."
            )
        return list(zip(views, members, strict=True))

    @property
    def display_name(self) -> str:
        return self.provenance.get("display_name", self.model_name)

    def unseen(self, case_names) -> list[str]:
        """The names among ``case_names`` that this model was neither trained nor validated on
        (as its provenance lists them), in order: where it can be shown or tested honestly."""
        seen = {*self.provenance.get("trained_on", []), *self.provenance.get("validated_on", [])}
        return [name for name in case_names if name not in seen]

    def config_dict(self) -> dict:
        """What ``config.json`` holds: enough to rebuild this exact model offline."""
        return dict(
            model=self.model_name,
            model_kwargs=self.net.rebuild_kwargs(),
            preprocessing=self.preprocessing,
            provenance=self.provenance,
            format=CHECKPOINT_FORMAT,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision=None,
        cache_dir=None,
        force_download=False,
        local_files_only=False,
        token=None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        # Unlike the mixin's default: safetensors only (no pickle fallback) and strict keys.
        from safetensors.torch import load_model

        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
        else:
            from huggingface_hub import hf_hub_download

            weights = Path(
                hf_hub_download(
                    model_id,
                    WEIGHTS_NAME,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    force_download=force_download,
                    local_files_only=local_files_only,
                )
            )
        load_model(model, str(weights), strict=True, device=map_location)
        return model


def save_checkpoint(
    model: LASegmenter,
    directory: str | os.PathLike,
    provenance: dict | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write the checkpoint folder atomically: a reader sees the old folder or the new one,
    never a mix, even if the process is killed half way.

    ``weights_dtype`` (e.g. ``torch.float16``) stores the floating-point tensors at that
    precision, halving the file for shipping; loading casts them back to the model's own
    dtype, so it still computes in float32."""
    directory = Path(directory).expanduser()
    if provenance:
        model.provenance.update(provenance)
    if weights_dtype is not None:
        model = copy.deepcopy(model).to(weights_dtype)  # .to(dtype) leaves integer buffers
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(staging, config=model.config_dict())
        for path in [staging, *staging.iterdir()]:  # safetensors writes its file 0600 too
            default_permissions(path)
        _replace_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)  # two renames: the window without `target` is microseconds
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def default_checkpoint_dir() -> Path:
    return Path(str(resources.files("napari_la_dinov2") / "weights" / "la_default"))


def is_hub_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def load_checkpoint(source: str | os.PathLike, map_location: str = "cpu") -> LASegmenter:
    """Load a checkpoint from a local folder or a hub repo id (cache and HF_HUB_OFFLINE honoured)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES and (path.is_file() or not is_hub_repo_id(text)):
        raise InputError(
            f"{path} is a pickled PyTorch file, which can run arbitrary code when loaded; "
            "only checkpoint folders with model.safetensors and config.json are accepted."
        )
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:5]) or "nothing"
            raise InputError(
                f"{path} is not a checkpoint folder: it needs {WEIGHTS_NAME} and {CONFIG_NAME} "
                f"(found {found})."
            )
        _check_config(path / CONFIG_NAME)
    elif path.exists():
        raise InputError(f"{path} is a file; a checkpoint is a folder (or a hub repo id).")
    elif not is_hub_repo_id(text):
        raise InputError(
            f"{text!r} is neither a model name ({', '.join(MODEL_SPECS)}, {DEFAULT_MODEL_NAME}), "
            "a checkpoint folder, nor a hub repo id (owner/name)."
        )
    try:
        return LASegmenter.from_pretrained(
            text if not path.is_dir() else str(path), map_location=map_location
        )
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"the checkpoint {text!r} could not be loaded ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); check the name, or run once "
            "with a network so it is cached, then HF_HUB_OFFLINE=1 works."
        ) from error


def _check_config(config_file: Path) -> None:
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{config_file} is not valid JSON ({error}).") from error
    if config.get("format") != CHECKPOINT_FORMAT or config.get("model") not in MODEL_SPECS:
        raise InputError(
            f"{config_file} is not a napari-la-dinov2 checkpoint config "
            f"(format {config.get('format')!r}, model {config.get('model')!r})."
        )


def load_model(
    source: str | os.PathLike = DEFAULT_MODEL_NAME,
    *,
    pretrained: bool = True,
    map_location: str = "cpu",
    **model_kwargs,
) -> LASegmenter:
    """One entry point for every kind of model a user can name:
    ``'default'`` (the embedded model), a registry name, a checkpoint folder or a hub repo id."""
    text = str(source)
    if text == DEFAULT_MODEL_NAME:
        directory = default_checkpoint_dir()
        if not (directory / WEIGHTS_NAME).is_file():
            raise InputError(
                "the embedded default model is missing from this installation; reinstall the "
                "package or name a model with --model/--checkpoint."
            )
        return load_checkpoint(directory, map_location)
    if text in MODEL_SPECS:
        from .registry import build_model

        spec = get_spec(text)
        if "pretrained" in spec.builder.__init__.__code__.co_varnames:
            model_kwargs.setdefault("pretrained", pretrained)
        return build_model(text, **model_kwargs)
    return load_checkpoint(source, map_location)
