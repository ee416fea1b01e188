"""`la-dinov2 evaluate`: Dice, IoU, HD95 and ASSD (mm) and LA volumes of predicted masks against
references, and the statistics that compare models.

Two forms:

- ``evaluate PRED GT``: two mask files, or two folders matched by file name (one model);
- ``evaluate --ref GT_DIR --pred NAME=DIR [--pred NAME2=DIR2 ...]``: several models' folders
  against one folder of references, compared over the cases they all have (mean ± SD, bootstrap
  95% CI, paired Wilcoxon tests between every pair); ``--model NAME=SOURCE`` adds the model's
  parameters, GFLOPs per slice and seconds per volume (:mod:`napari_la_dinov2.scoring.model_cost`).

Prints one line per case and the report; ``--csv`` writes the per-case rows, ``--summary-csv``
one row per model, ``--pairs-csv`` the tests, ``--markdown`` the report. Every output is checked
before any work; an existing one needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import InputError
from .numbers import SEED, bounded_int

# scipy draws all resamples at once (resamples x cases floats: 64 MB for 10^5 x 80 cases);
# 10^5 is already far past where a 95% CI stops moving.
MAX_RESAMPLES = 100_000
OUTPUTS = (("csv", ".csv"), ("summary_csv", ".csv"), ("pairs_csv", ".csv"), ("markdown", ".md"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks against references and compare models (Dice, IoU, HD95, "
        "ASSD, volume; CI, Wilcoxon, cost)",
        description="Compare a predicted mask with its reference (two files), every mask of a "
        "folder with the same-named mask of another folder, or several models' folders "
        "(--pred NAME=DIR, repeated) with one folder of references (--ref).",
    )
    parser.add_argument("pred", metavar="PRED", nargs="?", help="predicted mask or folder")
    parser.add_argument("gt", metavar="GT", nargs="?", help="reference mask or folder")
    parser.add_argument("--ref", metavar="GT_DIR", help="folder of reference masks")
    parser.add_argument(
        "--pred",
        dest="preds",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a model's folder of predictions (repeat it)",
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="the model behind NAME (default, a registry "
        "name or a checkpoint): report its parameters and GFLOPs per slice",
    )
    parser.add_argument(
        "--time-image",
        metavar="IMAGE",
        help="time each --model segmenting "
        "this image (s/volume); without it, a timing.csv beside the predictions "
        "is read",
    )
    parser.add_argument("--device", default="auto", help="device for the timing (auto)")
    parser.add_argument(
        "--label", type=int, metavar="N", help="the left atrium's value in multi-label masks"
    )
    parser.add_argument("--csv", metavar="OUT.csv", help="write the per-case metrics")
    parser.add_argument("--summary-csv", metavar="OUT.csv", help="write one row per model")
    parser.add_argument("--pairs-csv", metavar="OUT.csv", help="write the Wilcoxon tests")
    parser.add_argument("--markdown", metavar="OUT.md", help="write the report")
    parser.add_argument("--name", help="the model's name in the PRED GT form (default: PRED's)")
    parser.add_argument(
        "--resamples",
        type=bounded_int(100, MAX_RESAMPLES),
        default=10_000,
        help=f"bootstrap resamples (100-{MAX_RESAMPLES})",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="bootstrap seed (0 or more)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def _pairs(specs: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` options -> ``{name: value}``; a bare VALUE is named after its file."""
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            name, value = Path(spec).name, spec
        if not name or not value:
            raise InputError(f"{what} {spec!r}: write NAME=VALUE.")
        if name in named:
            raise InputError(f"{what}: the name {name!r} is given twice; give each one name.")
        named[name] = value
    return named


def _sources(args) -> tuple[dict[str, Path], Path, bool]:
    """(``{model: prediction folder or file}``, the reference, whether they are files)."""
    if args.ref or args.preds:
        if args.pred or args.gt:
            raise InputError("give PRED GT, or --ref with --pred NAME=DIR, not both forms.")
        if not (args.ref and args.preds):
            raise InputError(
                "--ref and --pred go together: one folder of references and at "
                "least one --pred NAME=DIR."
            )
        preds = {n: Path(p).expanduser() for n, p in _pairs(args.preds, "--pred").items()}
        gt, files = Path(args.ref).expanduser(), False
    else:
        if not (args.pred and args.gt):
            raise InputError(
                "give PRED and GT (files or folders), or --ref GT_DIR --pred NAME=DIR."
            )
        pred, gt = Path(args.pred).expanduser(), Path(args.gt).expanduser()
        files = not pred.is_dir()
        preds = {args.name or (pred.name if pred.is_dir() else _case(pred)): pred}
    for path in (*preds.values(), gt):
        if not path.exists():
            raise InputError(f"{path} does not exist.")
        if path.is_dir() == files:
            raise InputError("give two mask files or folders of masks, not one of each.")
    return preds, gt, files


def _case(path: Path) -> str:
    from ..scoring.evaluation import case_name

    return case_name(path)


def _check_outputs(args) -> None:
    from ..volume_files import check_output_path

    seen: dict[Path, str] = {}
    for attr, suffix in OUTPUTS:
        out = getattr(args, attr)
        if not out:
            continue
        option = "--" + attr.replace("_", "-")
        path = check_output_path(
            out,
            args.overwrite,
            suffixes=(suffix,),
            role=f"{option} file",
            noun="table",
            allow_missing_folder=False,
        )
        if path.resolve() in seen:
            raise InputError(f"{option} and {seen[path.resolve()]} name the same file {path}.")
        seen[path.resolve()] = option


def _check_models(models: dict[str, str]) -> None:
    """Refuse a model source that cannot load before the evaluation, not after it."""
    from ..models import ALIASES, MODEL_SPECS

    for name, source in models.items():
        path = Path(source).expanduser()
        if source in ALIASES or source in MODEL_SPECS or path.is_dir():
            continue
        if "/" in source and not path.exists():  # a hub repo id, checked when it loads
            continue
        raise InputError(
            f"--model {name}={source}: neither a model name ({', '.join([*ALIASES, *MODEL_SPECS])}"
            "), a checkpoint folder nor a hub repo id (owner/name)."
        )


def _costs(args, preds: dict[str, Path], models: dict[str, str], cases: list[str]) -> dict:
    from ..scoring.model_cost import model_cost, read_timing

    costs = {}
    for name, folder in preds.items():
        cost = {}
        if name in models:
            cost = model_cost(models[name], image=args.time_image, device=args.device)
        if args.time_image is None and folder.is_dir():
            timing = read_timing(folder, cases)
            if timing is not None:
                cost.update(seconds_per_volume=timing[0], timing=f"timing.csv ({timing[1]} cases)")
        if cost:
            costs[name] = cost
    return costs


def _cell(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _print_cases(results: dict[str, list[dict]]) -> None:
    several = len(results) > 1
    print(
        ("model\t" if several else "") + "case\tdice\tiou\thd95_mm\tassd_mm\tvolume_ml_pred"
        "\tvolume_ml_truth"
    )
    for model, rows in results.items():
        for row in rows:
            print(
                (f"{model}\t" if several else "") + f"{row['case']}\t{row['dice']:.4f}\t"
                f"{row['iou']:.4f}\t{_cell(row['hd95_mm'], 2)}\t{_cell(row['assd_mm'], 2)}\t"
                f"{row['volume_ml_pred']:.1f}\t{row['volume_ml_truth']:.1f}"
            )


def _evaluate(preds, gt, files, label) -> dict[str, list[dict]]:
    from tqdm import tqdm

    from ..scoring.evaluation import evaluate_files, evaluate_models

    # disable=None: no bar when stderr is not a terminal (logs, pipes), so an error stays one line
    with tqdm(desc="evaluate", unit="case", file=sys.stderr, leave=False, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if files:
            ((name, pred),) = preds.items()
            return {name: evaluate_files([pred], [gt], progress, label)}
        return evaluate_models(preds, gt, progress, label)


def run(args: argparse.Namespace) -> int:
    from ..scoring.report import compare, markdown_report, write_report

    preds, gt, files = _sources(args)
    models = _pairs(args.models, "--model")
    unknown = sorted(set(models) - set(preds))
    if unknown:
        raise InputError(
            f"--model {unknown[0]}=...: no --pred of that name; name each model "
            "like its predictions."
        )
    _check_models(models)
    if args.time_image and not models:
        raise InputError("--time-image times the models named by --model NAME=SOURCE; give one.")
    if args.time_image and not Path(args.time_image).expanduser().exists():
        raise InputError(f"{args.time_image} does not exist.")
    _check_outputs(args)

    results = _evaluate(preds, gt, files, args.label)
    comparison = compare(results, n_resamples=args.resamples, seed=args.seed)
    if comparison.n_cases == 0:
        raise InputError(
            "no case has a prediction from every model; name each model's masks "
            "like the references, so that the same cases can be compared."
        )
    cases = [str(row["case"]) for row in next(iter(comparison.aligned.values()))]
    comparison.costs = _costs(args, preds, models, cases)
    _print_cases(results)
    for model, stats in comparison.summary.items():
        dice, iou = stats["dice"], stats["iou"]
        print(
            f"{model}: mean ± SD over {stats['dice']['n']} cases: Dice {dice['mean']:.4f} ± "
            f"{dice['sd']:.4f}, IoU {iou['mean']:.4f} ± {iou['sd']:.4f}"
        )
    print(markdown_report(comparison), end="")
    write_report(
        comparison,
        markdown=args.markdown,
        summary_csv=args.summary_csv,
        pairs_csv=args.pairs_csv,
        cases_csv=args.csv,
    )
    return 0
