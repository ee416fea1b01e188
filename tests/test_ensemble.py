"""An ensemble of trained UNets packed as one checkpoint, and half-precision weight storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import build_model, load_checkpoint, save_checkpoint
from napari_la_dinov2.models.packing import ensemble_of
from napari_la_dinov2.training import TrainConfig
from napari_la_dinov2.training.run_setup import _initial_model
from tests.conftest import (
    TINY_UNET_KWARGS,
    TINY_UNET_PREPROCESSING,
    probabilities,
    synthetic_case,
)


def _trained_unet(seed: int, **preprocessing):
    """A tiny UNet whose weights and BatchNorm statistics are moved off their initial values
    (differently per seed), standing in for separately trained members."""
    torch.manual_seed(seed)
    model = build_model(
        "unet", preprocessing={**TINY_UNET_PREPROCESSING, **preprocessing}, **TINY_UNET_KWARGS
    )
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.2)
    return model.eval()


def test_the_ensemble_averages_its_members_logits_and_survives_a_round_trip(tmp_path):
    members = [_trained_unet(seed) for seed in (1, 2, 3)]
    for seed, member in zip((1, 2, 3), members, strict=True):
        member.provenance.update(seed=seed, trained_on=["a", f"t{seed}"], validated_on=["v"])
    ensemble = ensemble_of(members, provenance={"display_name": "three"}).eval()
    assert ensemble.model_name == "unet_ensemble" and ensemble.family == "cnn"
    assert ensemble.preprocessing == members[0].preprocessing

    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(dim=0)
        assert torch.allclose(ensemble(x), expected, atol=1e-6)
        assert not torch.allclose(members[0](x), expected, atol=1e-3)  # members do differ

    save_checkpoint(ensemble, tmp_path / "ensemble")
    loaded = load_checkpoint(tmp_path / "ensemble").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), ensemble(x))
    assert loaded.provenance["display_name"] == "three"
    assert [m["seed"] for m in loaded.provenance["members"]] == [1, 2, 3]
    assert loaded.provenance["trained_on"] == ["a", "t1", "t2", "t3"]  # what any member saw
    assert loaded.provenance["validated_on"] == ["v"]
    assert loaded.net.rebuild_kwargs() == {"members": 3, **members[0].net.rebuild_kwargs()}


def test_members_that_do_not_match_are_refused():
    unet = _trained_unet(0)
    wider = build_model(
        "unet",
        preprocessing=TINY_UNET_PREPROCESSING,
        channels=(8, 16, 64),
        strides=(2, 2),
        num_res_units=1,
    )
    with pytest.raises(InputError, match="another architecture"):
        ensemble_of([unet, wider])
    with pytest.raises(InputError, match="another input"):
        ensemble_of([unet, _trained_unet(1, input_size=32)])
    attention = build_model("attention_unet", channels=(8, 16, 32), strides=(2, 2))
    with pytest.raises(InputError, match="'attention_unet' model"):
        ensemble_of([attention])
    with pytest.raises(InputError, match="at least one"):
        ensemble_of([])


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = ensemble_of([_trained_unet(1), _trained_unet(2)]).eval()
    save_checkpoint(model, tmp_path / "fp32")
    save_checkpoint(model, tmp_path / "fp16", weights_dtype=torch.float16)
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32  # the tensors halve; the tensor index (header) does not
    with safe_open(tmp_path / "fp16" / "model.safetensors", "pt") as stored:
        dtypes = {stored.get_slice(name).get_dtype() for name in stored.keys()}
    assert dtypes == {"F16", "I64"}  # floats halved, BatchNorm's batch counters kept
    assert next(model.parameters()).dtype == torch.float32  # the model saved is left as it was

    loaded = load_checkpoint(tmp_path / "fp16").eval()
    for name, tensor in loaded.state_dict().items():
        original = model.state_dict()[name]
        assert tensor.dtype == original.dtype  # computes in float32 (int counters stay int)
        if tensor.is_floating_point():  # each value is the original rounded to float16
            assert torch.equal(tensor, original.half().float())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-2)  # fp16 rounding only


def test_a_packed_ensemble_segments_a_volume_like_its_members_average():
    members = []
    for seed in (4, 5):  # freshly initialised: moderate logits, so probabilities invert well
        torch.manual_seed(seed)
        members.append(
            build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS).eval()
        )
    ensemble = ensemble_of(members)
    image, _ = synthetic_case()
    together = probabilities(ensemble, image)
    logits = [np.log(p / (1 - p)) for p in (probabilities(m, image) for m in members)]
    averaged = 1 / (1 + np.exp(-(logits[0] + logits[1]) / 2))
    assert together.shape == image.shape
    assert np.allclose(together, averaged, atol=1e-4)


def test_a_2_5d_ensemble_derives_its_input_channels(tmp_path):
    config = TrainConfig(
        model="unet_ensemble",
        model_kwargs={**TINY_UNET_KWARGS, "members": 2},
        preprocessing={**TINY_UNET_PREPROCESSING, "context": 1},  # 3 slices as channels
    )
    assert _initial_model(config, tmp_path / "last").net.rebuild_kwargs()["in_channels"] == 3
    config.model_kwargs["in_channels"] = 1  # stated, and contradicting the context
    with pytest.raises(InputError, match="in_channels=1 does not fit"):
        _initial_model(config, tmp_path / "last")
