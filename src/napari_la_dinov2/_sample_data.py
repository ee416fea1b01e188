"""A small LGE-like volume made by code, with its true mask: no patient data in the package.

The phantom has what matters to a left-atrium model: a grey blood pool (the atrium body, four
pulmonary veins and an appendage) inside a thin enhanced wall, darker tissue around, a smooth
coil-shading bias and Rician-like noise, on the LA 2018 grid (0.625 x 0.625 x 1.25 mm, x y z).
"""

from __future__ import annotations

import numpy as np

from .volume_files import VolumeMeta

SAMPLE_SHAPE = (144, 120, 44)
SAMPLE_SPACING = (0.625, 0.625, 1.25)


def _tube(points: np.ndarray, start, end, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment start-end (points: ...x3 in mm)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    t = np.clip(((points - start) @ axis) / (axis @ axis), 0.0, 1.0)
    nearest = start + t[..., None] * axis
    return np.linalg.norm(points - nearest, axis=-1) <= radius


def make_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray, VolumeMeta]:
    """``(image float32 0-255, mask uint8, meta)`` of the phantom, axes (x, y, z)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(SAMPLE_SHAPE, SAMPLE_SPACING)], indexing="ij"
    )
    points = np.stack(grids, axis=-1)  # mm
    centre = np.array([n * s / 2 for n, s in zip(SAMPLE_SHAPE, SAMPLE_SPACING)])
    rel = (points - centre) / np.array([24.0, 18.0, 17.0])  # atrium body semi-axes in mm
    body = (rel**2).sum(-1) <= 1.0
    veins = np.zeros(SAMPLE_SHAPE, bool)
    for side in (-1, 1):  # left and right superior/inferior pulmonary veins
        for height in (-8.0, 8.0):
            start = centre + [side * 14.0, 8.0, height]
            end = centre + [side * 38.0, 22.0, height * 1.6]
            veins |= _tube(points, start, end, 4.5)
    appendage = _tube(points, centre + [-16.0, -10.0, 8.0], centre + [-30.0, -24.0, 14.0], 5.0)
    mask = body | veins | appendage
    # Bright neighbours that are not atrium (aorta, pulmonary artery, left ventricle): a model
    # must find the atrium by shape and place, not by brightness alone.
    others = _tube(points, centre + [6.0, -30.0, -30.0], centre + [6.0, -30.0, 30.0], 10.0)
    others |= _tube(points, centre + [-22.0, -30.0, -30.0], centre + [-22.0, -30.0, 30.0], 9.0)
    others |= _tube(points, centre + [10.0, 40.0, -30.0], centre + [2.0, 30.0, -8.0], 13.0)
    others &= ~mask
    from scipy import ndimage

    # The wall: a shell around the blood pool, enhanced (scar-like) in patches.
    wall = ndimage.binary_dilation(mask | others, iterations=3) & ~(mask | others)
    field = ndimage.gaussian_filter(rng.standard_normal(SAMPLE_SHAPE), 3, truncate=2)
    patches = field > 0.3 * field.std()
    image = 40.0 + 60.0 * ndimage.gaussian_filter(rng.random(SAMPLE_SHAPE), 2, truncate=2)
    image[mask] = 150.0
    image[others] = 140.0
    image[wall] = 60.0
    image[wall & patches] = 210.0
    image = ndimage.gaussian_filter(image, 0.7, truncate=2)
    bias = 1.0 + 0.2 * (points[..., 0] - centre[0]) / centre[0]  # coil shading left-right
    image *= bias
    noise = 14.0
    real = image + noise * rng.standard_normal(SAMPLE_SHAPE)
    imag = noise * rng.standard_normal(SAMPLE_SHAPE)
    image = np.sqrt(real**2 + imag**2)  # magnitude image: Rician noise
    meta = VolumeMeta.from_spacing(SAMPLE_SHAPE, SAMPLE_SPACING, source=None)
    return image.clip(0, 255).astype(np.float32), mask.astype(np.uint8), meta


def sample_lge():
    """npe2 sample-data command: the phantom as an Image layer and its true mask as Labels,
    shown in the acquisition plane like a file opened with the reader."""
    from ._layer_geometry import display_layer

    image, mask, meta = make_sample()
    image, image_kwargs = display_layer(image, meta, name="LGE phantom")
    image_kwargs["colormap"] = "gray"
    mask, labels_kwargs = display_layer(mask, meta, name="LGE phantom true mask")
    labels_kwargs["opacity"] = 0.4
    return [(image, image_kwargs, "image"), (mask, labels_kwargs, "labels")]
