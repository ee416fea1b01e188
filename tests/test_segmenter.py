"""The segmenter around the networks: one branch per view with channels derived from its
preprocessing, an untrained model that says so, a config that rebuilds the same model, and
checkpoints of the first format that still load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import (
    Branch,
    LASegmenter,
    build_model,
    count_parameters,
    default_checkpoint_dir,
    load_model,
)
from napari_la_dinov2.models.checkpoint import CHECKPOINT_FORMAT, model_from_config
from tests.conftest import REPO_ROOT, TINY_UNET_KWARGS, synthetic_case
from tests.test_models import tiny_kwargs


def test_a_single_network_is_one_branch_with_derived_channels():
    model = build_model("unet", preprocessing=dict(input_size=32, context=2), **TINY_UNET_KWARGS)
    assert isinstance(model, LASegmenter) and isinstance(model, torch.nn.Module)
    assert model.preprocessing.channels == 5  # 2k+1 slices with k = 2
    assert isinstance(model.branches, tuple) and len(model.branches) == 1
    (branch,) = model.branches
    assert isinstance(branch, Branch) and branch.net is model.net
    assert (branch.view, branch.transform.fit, branch.transform.channels) == (
        "through-plane",
        "pad",
        5,
    )
    # the network really takes 5 channels: its first convolution says so
    first_conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 5
    assert model(torch.randn(1, 5, 32, 32)).shape == (1, 1, 32, 32)


def test_a_stated_in_channels_must_agree_with_the_preprocessing():
    agrees = build_model(
        "unet", preprocessing=dict(input_size=32), in_channels=1, **TINY_UNET_KWARGS
    )
    assert agrees.preprocessing.channels == 1
    with pytest.raises(
        InputError, match="in_channels=3 does not fit the preprocessing, which gives 1"
    ):
        build_model("unet", preprocessing=dict(input_size=32), in_channels=3, **TINY_UNET_KWARGS)
    # a network with a fixed 3-channel input refuses a context that gives 5 ...
    with pytest.raises(InputError, match="ImageNet intensities take 3 channels"):
        build_model(
            "dinov2_vits14",
            **{**tiny_kwargs("dinov2_vits14"), "preprocessing": dict(input_size=56, context=2)},
        )
    # ... and a single z-scored channel
    grey = dict(input_size=56, intensity="zscore")
    with pytest.raises(InputError, match="takes 3 input channels, but context 0 gives 1"):
        build_model("dinov2_vits14", **{**tiny_kwargs("dinov2_vits14"), "preprocessing": grey})


def test_one_branch_per_view_needs_one_member_per_view():
    views = ["through-plane", "in-plane-1"]
    model = build_model(
        "unet_ensemble",
        preprocessing=dict(input_size=32, views=views, fits=["pad", "stretch"]),
        members=2,
        **TINY_UNET_KWARGS,
    )
    assert [(b.view, b.transform.fit) for b in model.branches] == [
        ("through-plane", "pad"),
        ("in-plane-1", "stretch"),
    ]
    assert all(b.net is m for b, m in zip(model.branches, model.net.members, strict=True))
    with pytest.raises(InputError, match="names 2 views but the 'unet' network has no members"):
        build_model("unet", preprocessing=dict(input_size=32, views=views), **TINY_UNET_KWARGS)
    with pytest.raises(InputError, match="names 2 views but .* has 3 members"):
        build_model(
            "unet_ensemble",
            preprocessing=dict(input_size=32, views=views),
            members=3,
            **TINY_UNET_KWARGS,
        )


def test_a_fresh_model_says_it_is_untrained_and_a_trained_one_does_not():
    model = build_model("unet", preprocessing=dict(input_size=32), **TINY_UNET_KWARGS)
    assert not model.is_trained
    assert model.untrained_warning() == (
        "'unet' has no trained segmentation weights: its mask is meaningless; fine-tune it "
        "first or choose a trained checkpoint."
    )
    model.provenance["trained_on"] = ["case-a"]
    assert model.is_trained and model.untrained_warning() is None
    assert model.unseen(["case-a", "case-b"]) == ["case-b"]


def test_config_dict_states_no_channels_and_rebuilds_the_same_model():
    model = build_model(
        "unet", preprocessing=dict(input_size=32, context=1, fit="stretch"), **TINY_UNET_KWARGS
    )
    config = model.config_dict()
    assert "in_channels" not in config["model_kwargs"]
    assert config["preprocessing"] == dict(
        input_size=32,
        intensity="zscore",
        context=1,
        branches=[dict(view="through-plane", fit="stretch")],
    )
    assert config["model"] == "unet" and config["provenance"] == {}
    rebuilt = model_from_config({**config, "format": CHECKPOINT_FORMAT})
    assert rebuilt.preprocessing == model.preprocessing
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_count_parameters_on_the_meta_device_matches_a_real_build():
    model = build_model("unet", preprocessing=dict(input_size=32), **TINY_UNET_KWARGS)
    real = sum(p.numel() for p in model.net.parameters())
    assert count_parameters("unet", in_channels=1, **TINY_UNET_KWARGS) == real


def test_a_format1_checkpoint_still_loads_with_the_shipped_weights(tmp_path):
    # The embedded model's previous config (format 1: fit, fits, views, channels and a stated
    # in_channels) beside today's shipped weights must give today's model exactly.
    folder = tmp_path / "format1"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "tests/data/checkpoint_format1_config.json", folder / "config.json")
    shutil.copy(default_checkpoint_dir() / "model.safetensors", folder / "model.safetensors")
    old = load_model(folder)
    default = load_model("default")
    assert old.preprocessing == default.preprocessing
    assert [(b.view, b.transform.fit) for b in old.branches] == [
        ("through-plane", "pad"),
        ("in-plane-1", "stretch"),
        ("in-plane-2", "stretch"),
    ]
    assert old.is_trained and old.provenance["trained_on"] == default.provenance["trained_on"]
    assert old.config_dict()["preprocessing"] == default.config_dict()["preprocessing"]
    volume, _ = synthetic_case(shape=(48, 40, 10))
    expected = Predictor(default, device="cpu")
    probs = expected.probabilities(expected.prepare(volume))
    got = Predictor(old, device="cpu")
    np.testing.assert_array_equal(got.probabilities(got.prepare(volume)), probs)
    assert probs.max() > 0.5 and probs.std() > 0.01  # a real prediction, not a constant
