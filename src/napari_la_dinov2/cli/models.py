"""`la-dinov2 models`: what can be segmented with, how big it is and where its weights come from.

Parameter counts are taken on the meta device: nothing is allocated and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "models",
        help="list the models with their size and where their weights come from",
        description="List the embedded default model and every registry model.",
    )


def _default_row() -> list[str]:
    from ..models import DEFAULT_MODEL_NAME, count_parameters, default_checkpoint_dir, get_spec

    directory = default_checkpoint_dir()
    config_file = directory / "config.json"
    if not (directory / "model.safetensors").is_file() or not config_file.is_file():
        return [DEFAULT_MODEL_NAME, "-", "-", "-", "not installed in this copy"]
    config = json.loads(config_file.read_text())
    name = config["model"]
    parameters = count_parameters(name, **config.get("model_kwargs", {}))
    size = config.get("preprocessing", {}).get(
        "input_size", get_spec(name).preprocessing.get("input_size")
    )
    return [
        DEFAULT_MODEL_NAME,
        get_spec(name).family,
        f"{parameters / 1e6:.1f}M",
        f"{size}x{size}",
        # e.g. "LA default (3-view UNet 2.5D 192)": says what kind of model it is at a glance
        f"embedded: {config.get('provenance', {}).get('display_name', name)} ({directory})",
    ]


def rows() -> list[list[str]]:
    from ..models import MODEL_SPECS, count_parameters

    table = [_default_row()]
    for name, spec in MODEL_SPECS.items():
        size = spec.preprocessing["input_size"]
        table.append(
            [
                name,
                spec.family,
                f"{count_parameters(name) / 1e6:.1f}M",
                f"{size}x{size}",
                spec.weights,
            ]
        )
    return table


def run(args: argparse.Namespace) -> int:
    header = ["model", "family", "params", "input", "weights"]
    table = [header, *rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join([*cells, row[-1]]))
    return 0
