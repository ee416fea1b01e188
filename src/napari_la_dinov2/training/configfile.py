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
from .finetune import TrainConfig

# Keys finetune adds to config.json for the record; not settings.
RECORD_KEYS = {
    "model_name",
    "val_on_train",
    "world_size",
    "feature_cache_used",
    "fixed_split",
    "subsets",
}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


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
        parts = key.strip().split(".")
        target = settings
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InputError(f"--set {key}: {part} is not a group of settings.")
        target[parts[-1]] = value
    return settings


def _coerce(owner: str, name: str, annotation: str, value):
    """A value read from YAML or the command line, turned into the field's type."""
    optional = "None" in annotation
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise InputError(f"{owner}.{name} cannot be empty.")
    try:
        if annotation.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in _TRUE | _FALSE:
                return str(value).lower() in _TRUE
            raise ValueError
        if annotation.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if annotation.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation.startswith("tuple"):
            return tuple(float(v) for v in value)
        if annotation.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return value
        if annotation.startswith("list"):
            return list(value) if isinstance(value, (list, tuple)) else [value]
        return str(value)
    except (TypeError, ValueError):
        raise InputError(
            f"{owner}.{name} must be {annotation.replace(' | None', ' or null')}, not {value!r}."
        ) from None


def _build(cls, settings: dict, owner: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in settings.items():
        if key in RECORD_KEYS:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(fields)}."
            raise InputError(f"unknown {owner} setting {key!r}; {hint}")
        if key == "train" and cls is FewShotConfig:
            kwargs[key] = train_config_from(value or {})
            continue
        kwargs[key] = _coerce(owner, key, str(fields[key].type), value)
    return cls(**kwargs)


def train_config_from(settings: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping; unknown keys and wrong types are InputErrors."""
    if not isinstance(settings, dict):
        raise InputError("the training settings must be a mapping (key: value).")
    return _build(TrainConfig, settings, "TrainConfig")


def fewshot_config_from(settings: dict) -> FewShotConfig:
    """A :class:`FewShotConfig` from a mapping (``train:`` holds the TrainConfig settings)."""
    if not isinstance(settings, dict):
        raise InputError("the few-shot settings must be a mapping (key: value).")
    config = _build(FewShotConfig, settings, "FewShotConfig")
    config.patients = [
        "all" if str(p).lower() == "all" else _coerce("FewShotConfig", "patients", "int", p)
        for p in config.patients
    ]
    config.fractions = [_coerce("FewShotConfig", "fractions", "float", f) for f in config.fractions]
    config.seeds = [_coerce("FewShotConfig", "seeds", "int", s) for s in config.seeds]
    config.models = [str(m) for m in config.models]
    return config


def to_yaml(config) -> str:
    """The resolved settings as YAML (what a run writes beside its results)."""
    return yaml.safe_dump(
        json.loads(json.dumps(dataclasses.asdict(config), default=list)), sort_keys=False
    )
