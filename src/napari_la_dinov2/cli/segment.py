"""`la-dinov2 segment IN --out OUT.nii.gz`: segment the left atrium of one volume, print its
LA measures and plausibility warnings; `segment IN_DIR --out OUT_DIR` does a folder
(segment_folder.py).

Every check that can fail (output paths, input file, region of interest, device) runs before
the model is loaded, so a bad argument costs a second, not a model load plus a full run, and
nothing is half-written: the mask, the overlay and the mesh are written as one unit at the end
(all or none, see :class:`~napari_la_dinov2.outputs.OutputGroup`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


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
    parser = subparsers.add_parser(
        "segment",
        help="segment the left atrium of a volume (or a folder of them), print its measures",
        description="Segment the left atrium of a 3D LGE-MRI volume (.nii, .nii.gz, .nrrd, or "
        "a DICOM series in a folder or .zip); the mask is written as uint8 with exactly the "
        "input's affine and shape, or as a DICOM SEG (.dcm) of a DICOM input. With a folder IN "
        "and a folder OUT, every scan of IN is segmented into OUT/<case>.nii.gz and "
        "OUT/stats.csv.",
    )
    parser.add_argument(
        "input",
        metavar="IN",
        help="input volume (.nii, .nii.gz, .nrrd) or DICOM folder/.zip; or a folder of them",
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="OUT",
        help="output mask (.nii.gz, .nii or .nrrd; .dcm writes a DICOM SEG for a DICOM input); "
        "for a folder IN, the output folder (made if missing)",
    )
    parser.add_argument(
        "--series", metavar="UID", help="the SeriesInstanceUID to read from a DICOM folder"
    )
    _add_model_options(parser)
    _add_region_options(parser)
    _add_output_options(parser)
    return parser


def _add_model_options(parser) -> None:
    """Which model, where it runs, and what it turns into a mask."""
    from ..models import ALIASES, DEFAULT_MODEL_NAME, list_models

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
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast on CUDA (auto: bf16)",
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


def _add_region_options(parser) -> None:
    """Where in the volume: a box, or one click on the atrium, and the slicing axis."""
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


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--png", metavar="OUT.png", help="also write a PNG overlay of the mask")
    parser.add_argument(
        "--mesh-out",
        metavar="LA.stl",
        help="also write the LA surface mesh (.stl, .obj, .ply or .vtk; scanner mm, LPS)",
    )
    parser.add_argument(
        "--ras", action="store_true", help="the mesh in RAS instead of LPS (Slicer's export)"
    )
    parser.add_argument(
        "--doubt-out",
        metavar="DOUBT.nii.gz",
        help="also write the model's doubt (float32, on the mask's grid) and list the slices "
        "to check first on stderr",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def is_folder_run(args: argparse.Namespace) -> bool:
    """A folder IN with an --out that names no mask file: segment every scan of IN into OUT.
    (A folder IN with --out x.nii.gz is one DICOM series.)"""
    from ..volume_files import MASK_SUFFIXES

    return Path(args.input).is_dir() and not args.out.lower().endswith(MASK_SUFFIXES)


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


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def check_outputs(args: argparse.Namespace) -> tuple[Path, Path | None, Path | None, Path | None]:
    """The mask, overlay, mesh and doubt paths, each refused now if it could not be written
    later."""
    from ..mesh import check_mesh_path
    from ..volume_files import MASK_SUFFIXES, check_output_path

    def check(path, **kwargs):
        return check_output_path(path, args.overwrite, allow_missing_folder=False, **kwargs)

    out = check(args.out, suffixes=MASK_SUFFIXES)
    png = check(args.png, suffixes=(".png",), role="overlay", noun="overlay") if args.png else None
    mesh = None
    if args.mesh_out:
        mesh = check_mesh_path(args.mesh_out, args.overwrite, allow_missing_folder=False)
    doubt = None
    if args.doubt_out:
        doubt = check(args.doubt_out, suffixes=MASK_SUFFIXES[:-1], role="doubt map", noun="map")
        if _same_file(doubt, out):
            raise InputError(
                f"--doubt-out {doubt} is the mask's file; give the doubt another name."
            )
    source = Path(args.input)
    if source.exists() and _same_file(source, out):
        raise InputError(f"{out} is the input image; the mask must be written to another file.")
    return out, png, mesh, doubt


def run(args: argparse.Namespace) -> int:
    if is_folder_run(args):
        from .segment_folder import run_folder

        return run_folder(args)
    from ..inference import RegionOfInterest
    from ..volume_files import check_mask_output, read_volume

    paths = check_outputs(args)
    # `is not None`: an empty --roi "" or --center "" (a script's unset variable) is refused,
    # not read as "no region" (which would segment the whole volume).
    roi = RegionOfInterest.parse(args.roi) if args.roi is not None else None
    from .engine_settings import inference_settings, load_engine

    settings = inference_settings(args, doubt=bool(args.doubt_out))
    settings.check()
    volume, meta = read_volume(Path(args.input), series_uid=args.series)
    check_mask_output(paths[0], meta)  # a .dcm (DICOM SEG) output needs a DICOM input
    slice_axis = args.slice_axis if args.slice_axis is not None else meta.through_plane_axis()
    (roi or RegionOfInterest()).clamp(volume.shape, slice_axis)  # checked before loading
    center = parse_center(args.center, volume.shape) if args.center is not None else None

    engine = load_engine(settings)
    result = _segment(engine, volume, meta, roi, center)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if paths[2] is not None and result.mesh is None:
        raise InputError(
            "no left atrium was found (the mask is empty), so there is no surface for "
            "--mesh-out and nothing was written; check the image and the region, or run "
            "without --mesh-out to keep the empty mask."
        )
    if paths[3] is not None and result.doubt is None:
        raise InputError(
            f"{engine.model.display_name} averages each slice with its mirror image (its "
            "checkpoint recommends it), which leaves no doubt map; nothing was written; run "
            "without --doubt-out."
        )
    title = f"{Path(args.input).name}: {engine.model.display_name}"
    _write(args, paths, volume, meta, result, title)
    _report(args, paths, engine, result, meta)
    return 0


def _report(args, paths, engine, result, meta) -> None:
    """Warnings and the slices to check on stderr; the summary and measures on stdout."""
    from ..scoring.metrics import la_volume_ml
    from .mesh import measure_lines

    out, png, mesh_out, doubt_out = paths
    # DICOM files skipped on reading (named), then the mask's plausibility warnings: printed
    # once all is written, so that a refusal stays one line.
    for warning in [*meta.extra.get("read_warnings", ()), *result.warnings]:
        print(f"warning: {warning}", file=sys.stderr)
    if doubt_out is not None:
        listing = ", ".join(map(str, result.doubtful)) or "none"
        print(f"slices to check first (axis {result.slice_axis}): {listing}", file=sys.stderr)
    labels = result.labels
    print(
        f"{out}: LA volume {la_volume_ml(labels, meta.spacing):.1f} mL ({int(labels.sum())} "
        f"voxels) in {result.seconds:.1f} s; model {engine.model.display_name} on "
        f"{engine.device}"
        + (f"; overlay {png}" if png is not None else "")
        + (f"; mesh {mesh_out}" if mesh_out is not None else "")
        + (f"; doubt {doubt_out}" if doubt_out is not None else "")
    )
    if result.measures is not None:
        print("\n".join(measure_lines(result.measures)))


def _segment(engine, volume, meta, roi, center):
    from tqdm import tqdm

    with tqdm(unit="slice", desc="segment", file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            # The Predictor says the total (slices over all of a multi-view model's views).
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        return engine.segment(volume, meta, roi=roi, center=center, progress=progress)


def _write(args, paths, volume, meta, result, title) -> None:
    """The mask, its overlay, mesh and doubt as one unit: all are written, or none."""
    from ..mesh import write_mesh
    from ..outputs import OutputGroup
    from ..overlay import save_overlay
    from ..volume_files import write_labels, write_map

    out, png, mesh_out, doubt_out = paths
    with OutputGroup(overwrite=args.overwrite) as group:
        write_labels(out, result.labels, meta, overwrite=args.overwrite, group=group)
        if png is not None:
            save_overlay(
                png,
                volume,
                result.labels,
                spacing=meta.spacing,
                slice_axis=result.slice_axis,
                title=title,
                axcodes=meta.axcodes,
                overwrite=args.overwrite,
                group=group,
            )
        if mesh_out is not None:
            write_mesh(result.mesh, mesh_out, overwrite=args.overwrite, group=group)
        if doubt_out is not None:
            write_map(doubt_out, result.doubt, meta, overwrite=args.overwrite, group=group)
