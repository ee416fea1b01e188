"""`la-dinov2 models`: what can be segmented with, how big it is, where it was trained (voxel
size and field of view in mm) and where its weights come from.

Parameter counts are taken on the meta device: nothing is allocated and nothing is downloaded.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "models",
        help="list the models with their size and where their weights come from",
        description="List the embedded default model and every registry model.",
    )


def _shipped_rows() -> list[list[str]]:
    """One row per shipped model (the embedded default), loaded as a user would."""
    from ..errors import InputError
    from ..grid import describe
    from ..models import ALIASES, load_model

    table = []
    for name, folder in ALIASES.items():
        try:
            model = load_model(name)
        except InputError:
            table.append([name, "-", "-", "-", "-", "not installed in this copy"])
            continue
        size = model.preprocessing.input_size
        parameters = sum(p.numel() for p in model.parameters())
        table.append(
            [
                name,
                model.family,
                f"{parameters / 1e6:.1f}M",
                f"{size}x{size}",
                describe(model.provenance),
                f"embedded: {model.display_name} ({folder()})",
            ]
        )
    return table


def rows() -> list[list[str]]:
    from ..models import MODEL_SPECS, count_parameters

    table = _shipped_rows()
    for name, spec in MODEL_SPECS.items():
        size = spec.preprocessing.input_size
        table.append(
            [
                name,
                spec.family,
                f"{count_parameters(name) / 1e6:.1f}M",
                f"{size}x{size}",
                "-",  # untrained heads: no training grid
                spec.weights,
            ]
        )
    return table


def run(args: argparse.Namespace) -> int:
    header = ["model", "family", "params", "input", "trained at (mm)", "weights"]
    table = [header, *rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join([*cells, row[-1]]))
    print(
        "trained at: median voxel size / field of view of the training cases, in mm, in the "
        "order in-plane 1, in-plane 2, through-plane."
    )
    return 0
