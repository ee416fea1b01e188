"""Checkpoints: a folder with ``model.safetensors`` and ``config.json`` that rebuilds the model.

``config.json`` names the registry model, the constructor arguments that rebuild its exact
architecture with no download, the preprocessing it was trained with and its training
provenance. The same folder works as a local directory or as a Hugging Face hub repo
(downloaded by ``huggingface_hub`` into its cache; ``HF_HUB_OFFLINE=1`` honoured), and
:func:`push_to_hub` publishes one. Only safetensors weights are read: pickled checkpoints
(``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pkl``) are refused, since unpickling a file someone
sent you can run any code.

Earlier checkpoints (format ``napari-la-dinov2/1``, the embedded model among them) load too:
their preprocessing goes through the one converter, ``Preprocessing.from_dict``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import InputError
from ..hub import is_official_backbone, offline, quiet_hub
from ..volume_files import default_permissions
from .baselines import RESNET50_IMAGENET_REPO
from .limits import check_weights_fit
from .registry import ALIASES, MODEL_SPECS, get_spec
from .segmenter import LASegmenter, build_model

CHECKPOINT_FORMAT = "napari-la-dinov2/2"
READABLE_FORMATS = ("napari-la-dinov2/1", CHECKPOINT_FORMAT)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def save_checkpoint(
    model: LASegmenter,
    directory: str | os.PathLike,
    provenance: dict | None = None,
    weights_dtype: torch.dtype | None = None,
    extra=None,
) -> Path:
    """Write the checkpoint folder atomically: a reader sees the old folder or the new one,
    never a mix, even if the process is killed half way. ``extra(folder)`` may write more
    files into it before it takes its place (a run's optimiser state: one unit with the model).

    ``weights_dtype`` (e.g. ``torch.float16``) stores the floating-point tensors at that
    precision, halving the file for shipping; loading casts them back to the model's own
    dtype, so it still computes in float32."""
    from safetensors.torch import save_model

    directory = Path(directory).expanduser()
    if provenance:
        model.provenance.update(provenance)
    config = {**model.config_dict(), "format": CHECKPOINT_FORMAT}
    if weights_dtype is not None:
        model = copy.deepcopy(model).to(weights_dtype)  # .to(dtype) leaves integer buffers
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(model, str(staging / WEIGHTS_NAME))
        if extra is not None:
            extra(staging)
        for path in [staging, *staging.iterdir()]:  # mkdtemp makes its folder 0700
            default_permissions(path)
        replace_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` in the place of ``target`` (two renames: the window
    without ``target`` is microseconds, and never shows a half-written folder)."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def push_to_hub(model: LASegmenter, repo_id: str, *, token: str | None = None, private=True):
    """Publish a checkpoint to the Hugging Face hub (private by default: patients' data may
    have shaped it). Returns the commit info of ``huggingface_hub``."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(model, Path(folder) / "checkpoint")
        return api.upload_folder(repo_id=repo_id, folder_path=str(Path(folder) / "checkpoint"))


def model_from_config(config, backbone_source: str | None = None) -> LASegmenter:
    """The model a ``config.json`` mapping describes, with fresh weights (checked).

    A checkpoint carries all its weights, so it never downloads or reads another file; the
    backbone it names (``backbone_source``, ``weights_source``) must be an official repo,
    unless the user vouches for another one by passing it as ``backbone_source``."""
    if not isinstance(config, dict):
        raise InputError("a checkpoint's config.json must hold a JSON object.")
    if config.get("format") not in READABLE_FORMATS or config.get("model") not in MODEL_SPECS:
        raise InputError(
            "config.json is not a napari-la-dinov2 checkpoint config "
            f"(format {config.get('format')!r}, model {config.get('model')!r})."
        )
    kwargs, provenance = config.get("model_kwargs", {}), config.get("provenance", {})
    if not isinstance(kwargs, dict) or not isinstance(provenance, dict):
        raise InputError("config.json: model_kwargs and provenance must be JSON objects.")
    if not isinstance(config.get("preprocessing"), dict | None):
        raise InputError("config.json: preprocessing must be a JSON object.")
    kwargs = _trusted_sources(kwargs, backbone_source)
    spec = get_spec(config["model"])
    if spec.accepts("pretrained"):  # the checkpoint's own weights replace any pretrained ones
        kwargs = {**kwargs, "pretrained": False}
    return LASegmenter(config["model"], kwargs, config.get("preprocessing"), provenance)


def _trusted_sources(kwargs: dict, backbone_source: str | None) -> dict:
    """``kwargs`` with each weights source checked: an official repo, or the user's own."""
    kwargs = dict(kwargs)
    for key, official in (
        ("backbone_source", is_official_backbone),
        ("weights_source", lambda s: s == RESNET50_IMAGENET_REPO),
    ):
        named = kwargs.get(key)
        if named is None or official(named) or named == backbone_source:
            continue
        if not isinstance(named, str):
            raise InputError(f"config.json: model_kwargs.{key} must be a repo id, not {named!r}.")
        raise InputError(
            f"the checkpoint names its backbone weights as {named!r}, which is not an official "
            "repo; pass --backbone-source with that name if you trust it."
        )
    return kwargs


def _checkpoint_files(source: str) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a local folder or a hub repo (downloaded)."""
    path = Path(source).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES and (path.is_file() or not _is_repo_id(source)):
        raise InputError(
            f"{path} is a pickled PyTorch file, which can run arbitrary code when loaded; "
            "only checkpoint folders with model.safetensors and config.json are accepted."
        )
    if path.is_dir():
        files = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not all(f.is_file() for f in files):
            found = ", ".join(sorted(p.name for p in path.iterdir())[:5]) or "nothing"
            raise InputError(
                f"{path} is not a checkpoint folder: it needs {WEIGHTS_NAME} and {CONFIG_NAME} "
                f"(found {found})."
            )
        return files
    if path.exists():
        raise InputError(f"{path} is a file; a checkpoint is a folder (or a hub repo id).")
    if not _is_repo_id(source):
        names = ", ".join([*ALIASES, *MODEL_SPECS])
        raise InputError(
            f"{source!r} is neither a model name ({names}), a checkpoint folder, nor a hub "
            "repo id (owner/name)."
        )
    from huggingface_hub import hf_hub_download

    cache_only = offline()
    try:
        with quiet_hub():
            return tuple(
                Path(hf_hub_download(source, n, local_files_only=cache_only))
                for n in (CONFIG_NAME, WEIGHTS_NAME)
            )
    except Exception as error:
        raise InputError(
            f"the checkpoint {source!r} could not be loaded ({error.__class__.__name__}); "
            "check the name, or run once with a network so it is cached, then "
            "HF_HUB_OFFLINE=1 works."
        ) from None


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return "/" in text  # a bare name is no one's repo: it is a typo of a model name


MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few kB; provenance lists case names


def _read_config(config_file: Path) -> dict:
    if config_file.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{config_file} is over {MAX_CONFIG_BYTES >> 20} MB; not a config.json.")
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{config_file} is not valid JSON ({error}).") from None


def load_checkpoint(
    source: str | os.PathLike, map_location: str = "cpu", *, backbone_source: str | None = None
) -> LASegmenter:
    """Load a checkpoint from a local folder or a hub repo id (cache and HF_HUB_OFFLINE
    honoured); strict: every tensor of the model must be in the file and nothing else.
    ``backbone_source``: a backbone repo or folder the user trusts although the checkpoint
    is not official (see :func:`model_from_config`). The model is first built on the meta
    device and checked against the file's header, so a file that cannot fit, or a config
    that would need absurd memory, is refused before any real allocation."""
    from safetensors.torch import load_model as load_weights

    config_file, weights_file = _checkpoint_files(str(source))
    config = _read_config(config_file)
    with torch.device("meta"):
        skeleton = model_from_config(config, backbone_source)
    check_weights_fit(skeleton, weights_file)
    model = _materialize(skeleton, map_location) or model_from_config(config, backbone_source)
    try:
        load_weights(model, str(weights_file), strict=True, device=map_location)
    except Exception as error:
        raise InputError(
            f"the weights in {weights_file} do not fit the model its config describes "
            f"({error.__class__.__name__}: {str(error).splitlines()[0][:200]})."
        ) from None
    _check_finite(model, weights_file)
    return model


def _materialize(skeleton: LASegmenter, device: str) -> LASegmenter | None:
    """The skeleton with real, uninitialised tensors on ``device``, for the strict load to fill
    every one (no random initialisation to overwrite: a quarter of the default's load time).
    None where the file could not fill them all: buffers outside the state dict (not
    persistent) or one parameter shared by two layers (``to_empty`` would untie it)."""
    persistent = skeleton.state_dict(keep_vars=True)
    if any(name not in persistent for name, _ in skeleton.named_buffers()):
        return None
    if len(list(skeleton.named_parameters(remove_duplicate=False))) != len(
        list(skeleton.parameters())
    ):
        return None
    # Not ``to_empty``: its ``empty_like`` on meta tensors runs PyTorch's Python reference
    # kernels, whose first call imports sympy (0.6 s of a cold start).
    return skeleton._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))


def _check_finite(model: torch.nn.Module, weights_file: Path) -> None:
    """NaN or infinite weights (a diverged run saved anyway) give NaN probabilities, which the
    threshold turns into an empty mask with no error: refuse them by name instead."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(
                f"{weights_file} holds NaN or infinite weights ({name}, among others perhaps): "
                "the training run diverged; use an earlier checkpoint."
            )


def load_model(
    source: str | os.PathLike = "default",
    *,
    pretrained: bool = True,
    map_location: str = "cpu",
    backbone_source: str | None = None,
    **model_kwargs,
) -> LASegmenter:
    """One entry point for every kind of model a user can name: an alias of shipped weights
    (``'default'``), a registry name (untrained head), a checkpoint folder or a hub repo id.
    ``backbone_source``: where a registry model's pretrained backbone comes from (a local
    folder or repo the user chose), or the non-official source a checkpoint names, vouched for."""
    text = str(source)
    if text in ALIASES:
        directory = ALIASES[text]()
        if not (directory / WEIGHTS_NAME).is_file():
            raise InputError(
                f"the shipped model {text!r} is missing from this installation; reinstall the "
                "package or name a model with --model/--checkpoint."
            )
        return load_checkpoint(directory, map_location, backbone_source=backbone_source)
    if text in MODEL_SPECS:
        spec = get_spec(text)
        if spec.accepts("pretrained"):
            model_kwargs.setdefault("pretrained", pretrained)
        for key in ("backbone_source", "weights_source"):
            if backbone_source is not None and spec.accepts(key):
                model_kwargs[key] = backbone_source
        return build_model(text, **model_kwargs)
    if not text.strip():
        raise InputError("the model name is empty; name a model, a checkpoint folder or a repo.")
    return load_checkpoint(source, map_location, backbone_source=backbone_source)
