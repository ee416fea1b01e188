"""`la-dinov2 segment IN --out OUT.nii.gz`: segment the left atrium of one volume.

Every check that can fail (output paths, input file, region of interest, device) runs before
the model is loaded, so a bad argument costs a second, not a model load plus a full run, and
nothing is half-written: the mask and the overlay are written atomically at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..models import ALIASES, DEFAULT_MODEL_NAME, list_models

    parser = subparsers.add_parser(
        "segment",
        help="segment the left atrium of a volume and write the mask as NIfTI/NRRD",
        description="Segment the left atrium of a 3D LGE-MRI volume (.nii, .nii.gz, .nrrd, or "
        "a DICOM series in a folder or .zip); the mask is written as uint8 with exactly the "
        "input's affine and shape, or as a DICOM SEG (.dcm) of a DICOM input.",
    )
    parser.add_argument(
        "input", metavar="IN", help="input volume (.nii, .nii.gz, .nrrd) or DICOM folder/.zip"
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="OUT",
        help="output mask (.nii.gz, .nii or .nrrd; .dcm writes a DICOM SEG for a DICOM input)",
    )
    parser.add_argument(
        "--series", metavar="UID", help="the SeriesInstanceUID to read from a DICOM folder"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        default=DEFAULT_MODEL_NAME,
        choices=[*ALIASES, *list_models()],
        metavar="NAME",
        help=f"'{DEFAULT_MODEL_NAME}' (the embedded trained model, the default) or a registry "
        "model (see `la-dinov2 models`; untrained heads, for testing only)",
    )
    source.add_argument(
        "--checkpoint",
        metavar="DIR_OR_REPO",
        help="a checkpoint folder (model.safetensors + config.json) or a hub repo id",
    )
    parser.add_argument(
        "--backbone-source",
        metavar="DIR_OR_REPO",
        help="a backbone you trust that is not an official DINOv2 repo: a local folder "
        "(safetensors) or a repo; a checkpoint naming one is refused without it",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda[:N], mps"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="slices per batch")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="autocast on CUDA (auto: bf16)"
    )
    region = parser.add_mutually_exclusive_group()
    region.add_argument(
        "--roi",
        metavar="r0:r1,c0:c1[,z0:z1]",
        help="in-plane box (and slice range) in array indices, stops exclusive; mask 0 outside",
    )
    region.add_argument(
        "--center",
        metavar="i,j,k",
        help="a voxel in the atrium (array indices): segment a region of the model's training "
        "field of view (mm) around it, for a full field-of-view scan; mask 0 outside",
    )
    parser.add_argument(
        "--slice-axis",
        type=int,
        choices=(0, 1, 2),
        help="the acquisition's through-plane axis, which slices are cut along (default: the "
        "coarsest axis of the affine); a multi-view model's other views are taken relative to it",
    )
    parser.add_argument(
        "--no-morphology", action="store_true", help="skip the in-plane opening + closing"
    )
    parser.add_argument(
        "--no-largest-cc", action="store_true", help="keep every connected component"
    )
    parser.add_argument(
        "--threshold", type=_probability, default=0.5, help="probability threshold (0.5)"
    )
    parser.add_argument("--png", metavar="OUT.png", help="also write a PNG overlay of the mask")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def check_png_path(path: str, overwrite: bool) -> Path:
    from ..io import check_output_path

    return check_output_path(path, overwrite, suffixes=(".png",), role="overlay", noun="overlay")


def parse_center(text: str, shape) -> tuple[int, int, int]:
    """--center 'i,j,k' as array indices inside a volume of ``shape``."""
    try:
        center = tuple(int(v) for v in text.split(","))
        if len(center) != 3:
            raise ValueError
    except ValueError:
        raise InputError(f"--center {text!r} is not of the form i,j,k (three integers).") from None
    if any(not 0 <= c < n for c, n in zip(center, shape)):
        raise InputError(
            f"--center {text} is outside the volume of shape {tuple(shape)}; "
            "give array indices from 0 to shape - 1."
        )
    return center


def center_region(center, meta, slice_axis: int, model):
    """The region of the model's training field of view around ``center`` (says on stderr
    when the model does not record its field of view and the fallback is used)."""
    from ..grid import fallback_note, field_of_view_mm
    from ..inference import RegionOfInterest

    extent, recorded = field_of_view_mm(model.provenance)
    if not recorded:
        print(f"note: {fallback_note(model.display_name)}", file=sys.stderr)
    return RegionOfInterest.around(center, meta, extent, slice_axis)


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor, RegionOfInterest, autocast_dtype, resolve_device
    from ..io import MASK_SUFFIXES, check_mask_output, check_output_path, read_volume, write_labels
    from ..metrics import la_volume_ml
    from ..models import load_model
    from ..overlay import save_overlay

    source = Path(args.input)
    out = check_output_path(args.out, args.overwrite, suffixes=MASK_SUFFIXES)
    png = check_png_path(args.png, args.overwrite) if args.png else None
    if source.exists() and _same_file(source, out):
        raise InputError(f"{out} is the input image; the mask must be written to another file.")
    roi = RegionOfInterest.parse(args.roi) if args.roi else None
    device = resolve_device(args.device)
    autocast_dtype(device, args.precision)
    volume, meta = read_volume(source, series_uid=args.series)
    check_mask_output(out, meta)  # a .dcm (DICOM SEG) output needs a DICOM input
    slice_axis = args.slice_axis if args.slice_axis is not None else meta.through_plane_axis()
    (roi or RegionOfInterest()).clamp(volume.shape, slice_axis)  # checks the ROI before loading
    center = parse_center(args.center, volume.shape) if args.center else None

    name = args.model if args.checkpoint is None else args.checkpoint
    model = load_model(name, backbone_source=args.backbone_source)
    if center is not None:
        roi = center_region(center, meta, slice_axis, model)
    if model.untrained_warning():
        print(f"warning: {model.untrained_warning()}", file=sys.stderr)
    predictor = Predictor(
        model,
        device=device,
        batch_size=args.batch_size,
        precision=args.precision,
        threshold=args.threshold,
        morphology=not args.no_morphology,
        largest_cc=not args.no_largest_cc,
    )

    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(unit="slice", desc="segment", file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            # The Predictor says the total (slices over all of a multi-view model's views).
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        labels = predictor.predict(volume, meta, slice_axis=slice_axis, roi=roi, progress=progress)
    seconds = time.perf_counter() - start

    write_labels(out, labels, meta, overwrite=args.overwrite)
    voxels = int(labels.sum())
    volume_ml = la_volume_ml(labels, meta.spacing)
    if png is not None:
        save_overlay(
            png,
            volume,
            labels,
            spacing=meta.spacing,
            slice_axis=slice_axis,
            title=f"{source.name}: {model.display_name}",
            axcodes=meta.axcodes,
            overwrite=args.overwrite,
        )
    print(
        f"{out}: LA volume {volume_ml:.1f} mL ({voxels} voxels) in {seconds:.1f} s; "
        f"model {model.display_name} on {predictor.device}"
        + (f"; overlay {png}" if png is not None else "")
    )
    return 0
