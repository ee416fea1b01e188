"""Training settings from a YAML (or JSON) file plus ``key=value`` overrides, checked against
the dataclass fields so a typo is an error that names the key, not a silently ignored setting.

A fine-tuning run's ``config.json`` is itself a valid config file (the keys it adds for the
record, such as ``model_name``, are skipped), so any run can be re-run from its directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

import yaml

from ..errors import InputError
from .fewshot import FewShotConfig
from .train_config import TrainConfig

# Keys finetune adds to config.json for the record; not settings.
RECORD_KEYS = {
    "model_name",
    "val_on_train",
    "world_size",
    "feature_cache_used",
    "fixed_split",
    "subsets",
}


def load_config_file(path: str | Path | None) -> dict:
    """The mapping in a YAML/JSON file (empty when ``path`` is None)."""
    if path is None:
        return {}
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InputError(f"cannot read the config file {path} ({error.strerror}).") from error
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML ({str(error).splitlines()[0]}).") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of settings (key: value).")
    return data


def apply_overrides(settings: dict, overrides: list[str] | None) -> dict:
    """``["lr=1e-4", "model_kwargs.channels=[8,16]"]`` applied to a copy of ``settings``;
    values are read as YAML (numbers, lists, true/false, null)."""
    settings = json.loads(json.dumps(settings, default=list))  # deep copy
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, not {item!r}.")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
            value = text.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word
        parts = key.strip().split(".")
        target = settings
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InputError(f"--set {key}: {part} is not a group of settings.")
        target[parts[-1]] = value
    return settings


def _validated(cls, settings: dict, owner: str):
    """``cls`` (a dataclass) from ``settings``, each value checked and converted to its field's
    type by pydantic; the first problem becomes one sentence that names the setting."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(cls).validate_python(settings)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in (owner, *first["loc"]))
        raise InputError(f"{where}: {first['msg'].lower()}, not {first['input']!r}.") from None


def _settings_of(cls, settings: dict, owner: str) -> dict:
    """``settings`` less the record-only keys, with a hint for an unknown key."""
    if not isinstance(settings, dict):
        raise InputError(f"the {owner} settings must be a mapping (key: value).")
    fields = [f.name for f in dataclasses.fields(cls)]
    kept = {}
    for key, value in settings.items():
        if key in RECORD_KEYS:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(fields)}."
            raise InputError(f"unknown {owner} setting {key!r}; {hint}")
        kept[key] = value
    return kept


def train_config_from(settings: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping; unknown keys and wrong types are InputErrors."""
    return _validated(
        TrainConfig, _settings_of(TrainConfig, settings, "TrainConfig"), "TrainConfig"
    )


def fewshot_config_from(settings: dict) -> FewShotConfig:
    """A :class:`FewShotConfig` from a mapping (``train:`` holds the TrainConfig settings)."""
    settings = _settings_of(FewShotConfig, settings, "FewShotConfig")
    if "train" in settings:
        settings["train"] = _settings_of(TrainConfig, settings["train"] or {}, "train")
    if "patients" in settings:  # whole numbers or 'all'
        patients = settings["patients"]
        settings["patients"] = [
            p if str(p).lower() != "all" else "all"
            for p in (patients if isinstance(patients, list) else [patients])
        ]
    return _validated(FewShotConfig, settings, "FewShotConfig")


def to_yaml(config) -> str:
    """The resolved settings as YAML (what a run writes beside its results)."""
    return yaml.safe_dump(
        json.loads(json.dumps(dataclasses.asdict(config), default=list)), sort_keys=False
    )
