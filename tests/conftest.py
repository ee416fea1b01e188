"""Shared fixtures: tiny models saved like hub checkpoints, real cases when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tiny models gain nothing from a second thread, and on a busy machine two threads wait on each
# other (a tiny ResNet50 forward took 5.3 s on 2 threads and 0.11 s on 1 here).
torch.set_num_threads(1)

TINY_DINOV2_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    patch_size=14,
    image_size=448,
)
TINY_DINOV2_KWARGS = dict(head_channels=16, decoder_channels=(16, 8))
TINY_DINOV2_PREPROCESSING = dict(input_size=112)
TINY_UNET_KWARGS = dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
TINY_UNET_PREPROCESSING = dict(input_size=64)


def tiny_unet_config(output_dir, **settings):
    """The tiny UNet's training config on the CPU, written to ``output_dir``; the rest per test."""
    from napari_la_dinov2.training import TrainConfig

    return TrainConfig(
        model="unet",
        model_kwargs=TINY_UNET_KWARGS,
        preprocessing=TINY_UNET_PREPROCESSING,
        device="cpu",
        output_dir=str(output_dir),
        **settings,
    )


def la2018_dir() -> Path | None:
    """The real LA 2018 cases: $LA2018_DIR, else ../shared/data/la2018 beside the repo."""
    candidates = [os.environ.get("LA2018_DIR"), REPO_ROOT.parent / "shared" / "data" / "la2018"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    found = la2018_dir()
    if found is None:
        pytest.skip("real LA 2018 cases not found: set LA2018_DIR or place ../shared/data/la2018")
    return found


@pytest.fixture(scope="session")
def real_case_ids(real_data_dir) -> list[str]:
    return (real_data_dir / "cases.txt").read_text(encoding="utf-8").split()


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide DINOv2 saved with save_pretrained: loads through the hub code path."""
    from transformers import Dinov2Config, Dinov2Model

    directory = tmp_path_factory.mktemp("tiny-dinov2")
    Dinov2Model(Dinov2Config(**TINY_DINOV2_CONFIG)).save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_dinov2(tiny_dinov2_dir):
    from napari_la_dinov2 import build_model

    return build_model(
        "dinov2_vits14",
        pretrained=True,
        backbone_source=str(tiny_dinov2_dir),
        preprocessing=TINY_DINOV2_PREPROCESSING,
        **TINY_DINOV2_KWARGS,
    )


def _constant_checkpoint(folder: Path, logit: float) -> Path:
    """A tiny UNet whose every pixel gets ``logit`` (all weights 0, output biases set)."""
    from napari_la_dinov2.models import build_model, save_checkpoint

    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                if module.out_channels == 1 and module.bias is not None:
                    module.bias.fill_(logit)
    return save_checkpoint(model, folder)


@pytest.fixture(scope="session")
def foreground_checkpoint(tmp_path_factory) -> Path:
    """A tiny UNet that calls every pixel atrium (all weights 0, output biases +5): its mask is
    known in advance, so the region of interest and the reported volume can be checked."""
    return _constant_checkpoint(tmp_path_factory.mktemp("ckpt") / "all-foreground", 5.0)


@pytest.fixture(scope="session")
def background_checkpoint(tmp_path_factory) -> Path:
    """A tiny UNet that finds no atrium anywhere (output biases -5): an empty mask."""
    return _constant_checkpoint(tmp_path_factory.mktemp("ckpt") / "all-background", -5.0)


@pytest.fixture
def tiny_unet():
    from napari_la_dinov2 import build_model

    return build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)


def synthetic_case(shape=(64, 56, 12), seed: int = 0):
    """An LGE-like volume with a bright ellipsoid 'atrium' and its true mask (x, y, z)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = (x / 0.45) ** 2 + (y / 0.4) ** 2 + (z / 0.7) ** 2 <= 1.0
    image = 40 + 20 * rng.standard_normal(shape) + 120 * mask
    return image.clip(0, 255).astype(np.float32), mask.astype(np.uint8)


@pytest.fixture
def synthetic():
    return synthetic_case()


def probabilities(model, volume, meta=None, **prepare_kwargs):
    """The foreground probability volume of ``model`` (the Predictor's two levels)."""
    from napari_la_dinov2.inference import Predictor

    predictor = Predictor(model, device="cpu")
    return predictor.probabilities(predictor.prepare(volume, meta, **prepare_kwargs))


# --- Leaving the test process ------------------------------------------------------------------
# Once every test has run and pytest has printed its summary, the interpreter still tears down
# Qt, vispy's GL context under Xvfb and torch's thread pools, in an order none of them controls.
# That teardown crashed once (SIGSEGV, exit 139) in four full runs on 2026-12-02, after "653
# passed": a crash in no test, which would still fail CI. So the process leaves with pytest's
# own exit status as soon as pytest is done (faulthandler, on in scripts/test.sh, still reports
# any crash while tests run).
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS and not hasattr(config, "workerinput"):  # not inside an xdist worker
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


@pytest.fixture
def no_model_load(monkeypatch):
    """Refusals of the input must come before any model is loaded (the hostile-input tests)."""
    import napari_la_dinov2.models as models

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(models, "load_model", load_model)
