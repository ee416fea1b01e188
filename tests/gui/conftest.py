"""GUI fixtures: a tiny checkpoint folder and a small annotated case (real, else synthetic)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from napari_la_dinov2 import VolumeMeta, build_model, read_labels, read_volume, save_checkpoint

TINY_UNET = dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random UNet saved as a checkpoint folder: what a user picks with the folder picker."""
    model = build_model("unet", preprocessing={"input_size": 64}, **TINY_UNET)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-unet")


def _crop(image, labels, meta, slices: int = 6):
    """A few slices around the largest atrium cross-section, with the affine moved to match."""
    area = labels.sum(axis=(0, 1))
    centre = int(np.argmax(area))
    z0 = max(0, min(centre - slices // 2, image.shape[2] - slices))
    shift = np.eye(4)
    shift[2, 3] = z0
    cropped = VolumeMeta(
        affine=meta.affine @ shift,
        shape=(image.shape[0], image.shape[1], slices),
        source=meta.source,
        format=meta.format,
        extra={},
    )
    return image[:, :, z0 : z0 + slices].copy(), labels[:, :, z0 : z0 + slices].copy(), cropped


@functools.cache
def _real_case(root: str):
    case_id = (Path(root) / "cases.txt").read_text().split()[0]
    image, meta = read_volume(Path(root) / "images" / f"{case_id}.nii.gz")
    labels = read_labels(Path(root) / "labels" / f"{case_id}.nii.gz", meta)
    return (case_id, *_crop(image, labels.astype(np.uint8), meta))


@pytest.fixture
def small_case(request):
    """(name, image, labels, meta): 6 slices of a real LA 2018 case, else the synthetic case."""
    try:
        root = request.getfixturevalue("real_data_dir")
    except pytest.skip.Exception:
        image, labels = request.getfixturevalue("synthetic")
        return (
            "synthetic",
            image,
            labels,
            VolumeMeta.from_spacing(image.shape, (0.625, 0.625, 1.25)),
        )
    name, image, labels, meta = _real_case(str(root))
    return name, image.copy(), labels.copy(), meta


@pytest.fixture(scope="session")
def foreground_checkpoint(tmp_path_factory):
    """A tiny UNet whose last layer is biased to say 'atrium' everywhere: a known output, so a
    test can tell where the model ran (inside a region of interest) from where it did not."""
    import torch

    model = build_model("unet", preprocessing={"input_size": 64}, **TINY_UNET)
    last = [
        m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        last[-1].bias.fill_(50.0)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "all-atrium")


@pytest.fixture
def notifications(monkeypatch):
    """Messages the widgets show with show_error/show_info, instead of popping them up."""
    shown = {"error": [], "info": []}
    import napari_la_dinov2._widgets._worker as worker

    monkeypatch.setattr(worker, "show_error", shown["error"].append)
    monkeypatch.setattr(worker, "show_info", shown["info"].append)
    return shown


@pytest.fixture
def add_case():
    """``add_case(viewer, case) -> (image layer, true-mask layer)``, as the reader makes them."""
    return _add_case_layers


def _add_case_layers(viewer, case):
    from napari_la_dinov2._widgets._layers import display_layer, labels_layer_kwargs, on_layer_grid

    # In the acquisition plane, as File > Open shows a volume: the widgets must convert back.
    name, image, labels, meta = case
    data, kwargs = display_layer(image, meta, name=name)
    image_layer = viewer.add_image(data, **kwargs)
    shown = on_layer_grid(image_layer, labels)
    labels_layer = viewer.add_labels(shown, **labels_layer_kwargs(image_layer, f"{name} mask"))
    return image_layer, labels_layer


@pytest.fixture
def case_folder(request, tmp_path):
    """A folder of 4 small annotated cases (images/ + labels/): 6 real slices each, else the
    synthetic case with different noise."""
    from napari_la_dinov2 import write_labels

    try:
        root = request.getfixturevalue("real_data_dir")
        ids = (root / "cases.txt").read_text().split()[1:5]
    except pytest.skip.Exception:
        root, ids = None, [f"synthetic{i}" for i in range(4)]
        base_image, base_labels = request.getfixturevalue("synthetic")
        spacing_meta = VolumeMeta.from_spacing(base_image.shape, (0.625, 0.625, 1.25))
    for i, case_id in enumerate(ids):
        if root is not None:
            image, meta = read_volume(root / "images" / f"{case_id}.nii.gz")
            labels = read_labels(root / "labels" / f"{case_id}.nii.gz", meta)
            image, labels, meta = _crop(image, labels.astype(np.uint8), meta)
        else:
            noise = np.random.default_rng(i).normal(0, 5, base_image.shape)
            image, labels, meta = (base_image + noise).clip(0, 255), base_labels, spacing_meta
        folder = tmp_path / "cases"
        write_labels(folder / "images" / f"{case_id}.nii.gz", image.astype(np.uint8), meta)
        write_labels(folder / "labels" / f"{case_id}.nii.gz", labels, meta)
    return tmp_path / "cases"
