"""GUI fixtures: tiny checkpoints, a synthetic case, real cases (skipped where absent), the
notifications napari shows, and a fresh model list for every test.

``small_case`` is a synthetic LGE-like phantom on the LA 2018 grid geometry (mirrored x and y
axes, 0.625 x 0.625 x 1.25 mm), for tests of the widgets' plumbing, which need no anatomy. Tests
that do need real anatomy take ``real_case`` and are marked ``real_data``: they skip, saying
why, where the LA 2018 cases are absent, instead of silently running on the phantom.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from napari_la_dinov2 import VolumeMeta, build_model, read_labels, read_volume, save_checkpoint

TINY_UNET = dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
# The LA 2018 voxel grid: axes to the patient's left, posterior, superior (RAS affine below).
LA2018_AFFINE = np.diag([-0.625, -0.625, 1.25, 1.0])


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_data: needs the real LA 2018 cases (skips with the reason without them)"
    )


@pytest.fixture(autouse=True)
def fresh_model_list():
    """Every test starts with the shipped models only: a checkpoint one test adds to the
    session-wide KNOWN_MODELS must not show up in the next test's widgets."""
    from napari_la_dinov2._widgets._models import KNOWN_MODELS

    KNOWN_MODELS.reset()
    yield KNOWN_MODELS
    KNOWN_MODELS.reset()


@pytest.fixture(autouse=True)
def napari_settings(monkeypatch, tmp_path):
    """napari settings saved under tmp_path: the plugin's activation (which names its reader
    for folders) and napari's viewer fixture never write the user's own preferences."""
    import napari.settings

    settings = napari.settings.NapariSettings(config_path=tmp_path / "napari-settings.yaml")
    monkeypatch.setattr(napari.settings, "_SETTINGS", settings)
    return settings


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random UNet saved as a checkpoint folder: what a user picks with the folder picker.
    Seeded: an unseeded one marks anywhere from 0 to 40,000 voxels of the phantom, so a test
    that measures its mask would pass or fail by chance (seed 0 marks about 32,000)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
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
    case_id = (Path(root) / "cases.txt").read_text(encoding="utf-8").split()[0]
    image, meta = read_volume(Path(root) / "images" / f"{case_id}.nii.gz")
    labels = read_labels(Path(root) / "labels" / f"{case_id}.nii.gz", meta)
    return (case_id, *_crop(image, labels.astype(np.uint8), meta))


@pytest.fixture
def small_case(synthetic):
    """(name, image, labels, meta): the synthetic phantom on the LA 2018 grid geometry."""
    image, labels = synthetic
    return "synthetic", image, labels, VolumeMeta(affine=LA2018_AFFINE, shape=image.shape)


@pytest.fixture
def real_case(real_data_dir):
    """(name, image, labels, meta): 6 slices of a real LA 2018 case (skips without the data)."""
    name, image, labels, meta = _real_case(str(real_data_dir))
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
    """The messages napari would pop up, by severity ("error", "warning", "info"), and under
    "traceback" the errors shown with their traceback (napari's ErrorNotification). Caught at
    napari's notification manager, so show_error & co, a worker's relayed warnings and napari's
    own error relay all land here."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    shown = {"error": [], "warning": [], "info": [], "traceback": []}

    def dispatch(notification):
        if isinstance(notification, ErrorNotification):
            shown["traceback"].append(notification)
        shown.setdefault(str(notification.severity.value).lower(), []).append(notification.message)

    monkeypatch.setattr(notification_manager, "dispatch", dispatch)
    # napari shows each warning (message, file, line) once per session: once per test here.
    monkeypatch.setattr(notification_manager, "_seen_warnings", set())
    return shown


@pytest.fixture
def add_case():
    """``add_case(viewer, case) -> (image layer, true-mask layer)``, as the reader makes them."""
    return add_case_layers


def add_case_layers(viewer, case):
    from napari_la_dinov2._layer_geometry import display_layer, labels_layer_kwargs, on_layer_grid

    # In the acquisition plane, as File > Open shows a volume: the widgets must convert back.
    name, image, labels, meta = case
    data, kwargs = display_layer(image, meta, name=name)
    image_layer = viewer.add_image(data, **kwargs)
    shown = on_layer_grid(image_layer, labels)
    labels_layer = viewer.add_labels(shown, **labels_layer_kwargs(image_layer, f"{name} mask"))
    return image_layer, labels_layer


@pytest.fixture
def case_folder(small_case, tmp_path):
    """A folder of 4 small annotated cases (images/ + labels/): the synthetic case with
    different noise (the few-shot plumbing needs no anatomy)."""
    from napari_la_dinov2 import write_labels

    _, base_image, labels, meta = small_case
    folder = tmp_path / "cases"
    for i in range(4):
        noise = np.random.default_rng(i).normal(0, 5, base_image.shape)
        image = (base_image + noise).clip(0, 255).astype(np.uint8)
        write_labels(folder / "images" / f"synthetic{i}.nii.gz", image, meta)
        write_labels(folder / "labels" / f"synthetic{i}.nii.gz", labels, meta)
    return folder
