"""`la-dinov2 refine IMAGE MASK --add i,j,k --remove i,j,k ... --out OUT`: correct a mask by clicks.

The clicks are applied to MASK in the order given on the command line (``--add`` and
``--remove`` may alternate), each by the click model through :class:`~..interactive.Refiner`,
the same path as the napari Correct dock and the benchmark; each changes the mask only within
its window. Every check (the output, the mask's grid, each click inside the volume) runs
before the model loads; the result is written with the image's exact geometry.
"""

from __future__ import annotations

import argparse
import sys
import time


class _OrderedClick(argparse.Action):
    """Appends ``(text, positive)`` to one shared list, so --add and --remove keep their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        clicks = list(getattr(namespace, "clicks", None) or [])
        clicks.append((values, option_string == "--add"))
        namespace.clicks = clicks


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "refine",
        help="correct an LA mask by positive and negative clicks (array indices)",
        description="Apply clicks to MASK in the order given: --add i,j,k where the atrium was "
        "missed, --remove i,j,k where something else was taken (array indices of IMAGE). Each "
        "click changes the mask only near it; the result is written on IMAGE's grid.",
    )
    parser.add_argument("image", metavar="IMAGE", help="the image (.nii, .nii.gz, .nrrd, DICOM)")
    parser.add_argument("mask", metavar="MASK", help="the mask to correct, on IMAGE's grid")
    for flag, meaning in (("--add", "belongs to the atrium"), ("--remove", "does not")):
        help_text = f"a voxel that {meaning} (repeatable)"
        parser.add_argument(
            flag, action=_OrderedClick, metavar="i,j,k", dest="clicks", help=help_text
        )
    parser.add_argument("--out", "-o", required=True, metavar="OUT", help="the corrected mask")
    parser.add_argument("--label", type=int, metavar="N", help="the label in a multi-label mask")
    parser.add_argument(
        "--click-model", metavar="DIR", help="a click model folder (default: the embedded one)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..interactive import Click, ClickSession, Refiner, load_click_model
    from ..scoring.evaluation import select_label
    from ..volume_files import (
        MASK_SUFFIXES,
        check_output_path,
        read_labels_with_meta,
        read_volume,
        write_labels,
    )

    if not args.clicks:
        raise InputError("no click given; pass --add i,j,k and/or --remove i,j,k.")
    clicks = [Click.parse(text, positive) for text, positive in args.clicks]
    check_output_path(args.out, args.overwrite, suffixes=MASK_SUFFIXES, allow_missing_folder=False)
    volume, meta = read_volume(args.image)
    labels, _ = read_labels_with_meta(args.mask, meta)
    mask = select_label(labels, args.mask, args.label).astype("uint8")
    for click in clicks:
        click.check_inside(meta.shape)
    refiner = Refiner(load_click_model(args.click_model), device=args.device)
    session = ClickSession(refiner, refiner.prepare(volume, meta))
    started, before = time.perf_counter(), int(mask.sum())
    for click in clicks:
        mask, _ = session.apply(click, mask)
    seconds = time.perf_counter() - started
    write_labels(args.out, mask, meta, overwrite=args.overwrite)
    print(
        f"{args.out}: {len(clicks)} click(s) in {seconds:.2f} s; {int(mask.sum()) - before:+d} "
        f"voxels ({int(mask.sum())} in the mask)",
        file=sys.stderr,
    )
    return 0
