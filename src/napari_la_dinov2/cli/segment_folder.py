"""`la-dinov2 segment IN_DIR --out OUT_DIR`: every scan of a folder, the model loaded once.

The engine is :mod:`napari_la_dinov2.scan_folder`; this module checks the arguments, loads the model,
shows a progress bar over the cases and prints each case's warnings and errors. Exit status:
0 when every case is segmented, 2 when a case was refused (bad input; its row says why),
1 when a case hit an internal error (a bug; its traceback is printed).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from ..errors import InputError
from .engine_settings import inference_settings, load_engine

# Options that name one file or one scan's region: meaningless for a folder of scans.
_SINGLE_SCAN_OPTIONS = (
    ("png", "--png"),
    ("mesh_out", "--mesh-out"),
    ("series", "--series"),
    ("roi", "--roi"),
    ("center", "--center"),
    ("doubt_out", "--doubt-out"),
)


def _check_options(args: argparse.Namespace) -> None:
    for name, flag in _SINGLE_SCAN_OPTIONS:
        if getattr(args, name, None) is not None:  # an empty value is given too
            raise InputError(
                f"{flag} applies to one scan, and {args.input} is a folder of scans segmented "
                f"into the folder {args.out}; run segment on that scan alone to use {flag}."
            )
    if args.slice_axis is not None:
        raise InputError(
            "--slice-axis applies to one scan; in a folder each scan's through-plane axis is "
            "read from its own affine."
        )


def _one_line(name: str) -> str:
    """A case name as one printable line: control characters (a newline) written escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def run_folder(args: argparse.Namespace) -> int:
    """Segment every scan of ``args.input`` into the folder ``args.out``."""
    from tqdm import tqdm

    from ..scan_folder import plan_folder, segment_cases

    _check_options(args)
    plan = plan_folder(args.input, args.out, overwrite=args.overwrite)
    settings = inference_settings(args)
    settings.check()
    if not plan.todo:
        print(f"{plan.stats_path}: all {len(plan.skipped)} cases already done (--overwrite redoes)")
        return 0
    engine = load_engine(settings)
    model_name = engine.model.display_name
    failed, broken = 0, 0
    results = segment_cases(plan, engine, model_name)
    for result in tqdm(results, total=len(plan.todo), unit="case", desc="segment", file=sys.stderr):
        shown = _one_line(result.name)  # a case name may hold a newline
        for warning in filter(None, result.row.get("warnings", "").split(" | ")):
            tqdm.write(f"warning: {shown}: {warning}", file=sys.stderr)
        if isinstance(result.error, InputError):
            failed += 1
            tqdm.write(f"error: {shown}: {result.row['status']}", file=sys.stderr)
        elif result.error is not None:
            broken += 1
            tqdm.write("".join(traceback.format_exception(result.error)), file=sys.stderr)
    done = len(plan.todo) - failed - broken
    print(
        f"{plan.stats_path}: {done} cases segmented, {len(plan.skipped)} already done, "
        f"{failed + broken} failed; model {model_name} on {engine.device}"
    )
    return 1 if broken else 2 if failed else 0
