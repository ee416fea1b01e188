"""`la-dinov2 mesh MASK --out la.stl`: the surface mesh of a left-atrium mask and its measures.

The mesh is in scanner mm, LPS (DICOM patient coordinates, as 3D Slicer exports models) unless
``--ras``; .stl, .obj, .ply or legacy .vtk by the suffix. The LA measures are printed as a
header line and a value line (tab-separated); plausibility warnings go to stderr. Every check
runs before the mesh is made, and the file is written atomically at the end.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "mesh",
        help="surface mesh of an LA mask (STL/OBJ/PLY/VTK in scanner mm) and its LA measures",
        description="Mesh a left-atrium mask (.nii, .nii.gz, .nrrd) into one closed, smoothed "
        "surface in scanner millimetres and print its volume, area, sphericity and diameters.",
    )
    parser.add_argument("mask", metavar="MASK", help="LA mask (.nii, .nii.gz or .nrrd)")
    parser.add_argument(
        "--out", "-o", required=True, metavar="OUT", help="mesh file: .stl, .obj, .ply or .vtk"
    )
    parser.add_argument(
        "--ras", action="store_true", help="RAS coordinates instead of LPS (Slicer's export)"
    )
    parser.add_argument(
        "--label", type=int, metavar="N", help="the label value to mesh in a multi-label mask"
    )
    parser.add_argument(
        "--image", metavar="IMAGE", help="the mask's image: refuse a mask not on its grid"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return parser


def measure_lines(measures) -> list[str]:
    """The LA measures as a header line and a value line, tab-separated (``segment`` too)."""
    from ..scan_folder import measure_columns

    row = measure_columns(measures)
    return ["\t".join(row), "\t".join(row.values())]


def run(args: argparse.Namespace) -> int:
    from ..measures import measure_mask
    from ..mesh import check_mesh_path, write_mesh
    from ..scoring.evaluation import select_label
    from ..volume_files import read_labels_with_meta, read_volume

    # A missing folder is refused, as for every output of the command line (a typo would
    # otherwise become a new tree of folders).
    out = check_mesh_path(args.out, args.overwrite, allow_missing_folder=False)
    image_meta = read_volume(args.image)[1] if args.image else None
    labels, meta = read_labels_with_meta(args.mask, image_meta)
    mask = select_label(labels, args.mask, args.label)
    if not mask.any():
        raise InputError(f"{args.mask} is empty (no foreground voxel); there is nothing to mesh.")
    report = measure_mask(mask, meta, ras=args.ras)
    mesh, measures = report.mesh, report.measures
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    write_mesh(mesh, out, overwrite=args.overwrite)

    print("\n".join(measure_lines(measures)))
    print(
        f"{out}: {len(mesh.faces)} triangles, {len(mesh.vertices)} vertices, "
        f"{measures.coordinate_system} mm",
        file=sys.stderr,
    )
    return 0
