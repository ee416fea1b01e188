"""`la-dinov2 evaluate PRED GT`: Dice, IoU, HD95 and ASSD (mm) and LA volumes of predicted masks
against references; two files, or two folders matched by file name.

Prints one line per case and the mean +- SD; ``--csv`` writes the per-case rows, ``--markdown``
the summary as the paper's Table 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks against references (Dice, IoU, HD95, ASSD, volume)",
        description="Compare a predicted mask with its reference (two files), or every mask of "
        "a folder with the same-named mask of another folder.",
    )
    parser.add_argument("pred", metavar="PRED", help="predicted mask, or a folder of them")
    parser.add_argument("gt", metavar="GT", help="reference mask, or a folder of them")
    parser.add_argument("--csv", metavar="OUT.csv", help="write the per-case metrics")
    parser.add_argument("--markdown", metavar="OUT.md", help="write the summary table")
    parser.add_argument("--name", help="row label in the table (default: PRED's name)")
    return parser


def _cell(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..evaluation import case_name, evaluate_files, evaluate_folders
    from ..metrics import markdown_table, summarize, write_cases_csv, write_table_markdown

    pred, gt = Path(args.pred).expanduser(), Path(args.gt).expanduser()
    for path in (pred, gt):
        if not path.exists():
            raise InputError(f"{path} does not exist.")
    if pred.is_dir() != gt.is_dir():
        raise InputError("give two mask files or two folders of masks, not one of each.")
    for out, suffix in ((args.csv, ".csv"), (args.markdown, ".md")):
        if out and (Path(out).is_dir() or not out.lower().endswith(suffix)):
            raise InputError(f"{out}: give a file name ending in {suffix}.")

    with tqdm(desc="evaluate", unit="case", file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if pred.is_dir():
            rows = evaluate_folders(pred, gt, progress)
        else:
            rows = evaluate_files([pred], [gt], progress)

    print("case\tdice\tiou\thd95_mm\tassd_mm\tvolume_ml_pred\tvolume_ml_truth")
    for row in rows:
        print(
            f"{row['case']}\t{row['dice']:.4f}\t{row['iou']:.4f}\t{_cell(row['hd95_mm'], 2)}\t"
            f"{_cell(row['assd_mm'], 2)}\t{row['volume_ml_pred']:.1f}\t{row['volume_ml_truth']:.1f}"
        )
    label = args.name or (pred.name if pred.is_dir() else case_name(pred))
    if len(rows) > 1:
        summary = summarize(rows)
        print(
            f"mean ± SD over {len(rows)} cases: Dice {summary['dice']['mean']:.4f} ± "
            f"{summary['dice']['sd']:.4f}, IoU {summary['iou']['mean']:.4f} ± "
            f"{summary['iou']['sd']:.4f}"
        )
        print(markdown_table({label: rows}), end="")
    if args.csv:
        write_cases_csv(args.csv, rows)
    if args.markdown:
        write_table_markdown(args.markdown, {label: rows})
    return 0
