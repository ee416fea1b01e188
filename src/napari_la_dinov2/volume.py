"""A volume's geometry (:class:`VolumeMeta`) and the checks every reader applies to its voxels.

The lowest layer of the engine's file handling: volume_files.py, dicom.py and the writers build on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

# Smaller than this in-plane cannot hold an atrium at any MRI resolution we know of.
MIN_INPLANE_VOXELS = 8


@dataclass
class VolumeMeta:
    """Geometry of a 3D volume: what is needed to show it in physical space and to write back.

    ``affine`` is 4x4 voxel-index -> RAS mm; ``spacing`` the voxel size in mm per array axis;
    ``axcodes`` the anatomical direction each array axis points to (e.g. ``("R", "A", "S")``).
    ``extra`` keeps format specifics (NIfTI qform/sform codes) so a write is an exact mirror.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    source: str | None = None
    format: str = "nifti"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))

    @property
    def is_oblique(self) -> bool:
        """True when the voxel axes are not aligned with RAS (rotation or shear in the affine)."""
        direction = self.affine[:3, :3] / np.asarray(self.spacing)
        return not np.allclose(np.abs(direction), np.abs(np.round(direction)), atol=1e-6)

    def through_plane_axis(self) -> int:
        """The acquisition's slice axis: the coarsest voxel axis; the last axis if isotropic."""
        spacing = np.asarray(self.spacing)
        if spacing.max() > 1.05 * spacing.min():
            return int(np.argmax(spacing))
        return 2

    @classmethod
    def from_spacing(cls, shape, spacing=(1.0, 1.0, 1.0), **kwargs) -> VolumeMeta:
        """Meta for an array held in memory (no file): axis-aligned RAS with the given spacing."""
        affine = np.diag([*map(float, spacing), 1.0])
        return cls(affine=affine, shape=tuple(int(s) for s in shape), **kwargs)


def check_content(volume: np.ndarray, path) -> None:
    """Refuse what cannot hold an atrium (too small, no finite value, constant); NaN/inf voxels
    are set to the darkest finite value, in place."""
    if sorted(volume.shape)[-2] < MIN_INPLANE_VOXELS:
        raise InputError(
            f"{path} has shape {volume.shape}, too small to hold a left atrium; "
            "give the full 3D volume."
        )
    finite = np.isfinite(volume)
    if not finite.any():
        raise InputError(f"{path} holds no finite values (all NaN or inf).")
    if not finite.all():
        volume[~finite] = volume[finite].min()
    if volume.min() == volume.max():
        raise InputError(
            f"{path} has the same value ({volume.flat[0]:g}) in every voxel; it holds no image."
        )
