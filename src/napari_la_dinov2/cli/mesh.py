"""`la-dinov2 mesh MASK --out la.stl`: the surface mesh of a left-atrium mask and its measures.

The mesh is in scanner mm, LPS (DICOM patient coordinates, as 3D Slicer exports models) unless
``--ras``; .stl, .obj, .ply or legacy .vtk by the suffix. The LA measures are printed as a
header line and a value line (tab-separated); plausibility warnings go to stderr. Every check
runs before the mesh is made, and the file is written atomically at the end.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

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


def select_label(labels: np.ndarray, label: int | None, name: str) -> np.ndarray:
    """The binary mask of ``label``; without it, of the single non-zero value the mask holds
    (several values are refused: which structure is the atrium is the user's choice)."""
    values = np.unique(labels)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError(f"{name} holds non-integer values; give a label mask.")
    present = [int(v) for v in values if v != 0]
    if label is not None:
        if label not in present:
            listing = ", ".join(map(str, present)) or "no label"
            raise InputError(f"{name} has no label {label} (it holds {listing}).")
        return labels == label
    if len(present) > 1:
        raise InputError(
            f"{name} holds labels {', '.join(map(str, present))}; pass --label N to choose one."
        )
    return labels != 0


def measure_lines(measures) -> list[str]:
    """The LA measures as a header line and a value line, tab-separated (``segment`` too)."""
    from ..batch import measure_columns

    row = measure_columns(measures)
    return ["\t".join(row), "\t".join(row.values())]


def run(args: argparse.Namespace) -> int:
    from ..io import read_labels_with_meta, read_volume
    from ..measures import measure_mask
    from ..mesh import check_mesh_path, write_mesh

    out = check_mesh_path(args.out, args.overwrite)
    image_meta = read_volume(args.image)[1] if args.image else None
    labels, meta = read_labels_with_meta(args.mask, image_meta)
    mask = select_label(labels, args.label, args.mask)
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
