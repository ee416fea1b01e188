"""The model zoo on tiny configurations, and every way weights reach it without a network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import (
    ALIASES,
    build_model,
    count_parameters,
    default_checkpoint_dir,
    get_spec,
    list_models,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from napari_la_dinov2.preprocess import BranchInput, Preprocessing
from tests.conftest import (
    TINY_DINOV2_CONFIG,
    TINY_DINOV2_KWARGS,
)

EXPECTED_MODELS = {
    *(f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")),
    "unet",
    "attention_unet",
    "res50_unet",
    "unet_ensemble",
}
TINY_CNN_CHANNELS = dict(channels=(8, 16, 32), strides=(2, 2))


def tiny_kwargs(name: str) -> dict:
    """Constructor arguments that make each registry model small enough for a CPU test."""
    if name.startswith("dinov2"):
        config = dict(TINY_DINOV2_CONFIG)
        if name.endswith("_reg"):
            config["num_register_tokens"] = 2
        return dict(
            pretrained=False,
            backbone_config=config,
            preprocessing=dict(input_size=56),
            **TINY_DINOV2_KWARGS,
        )
    if name == "unet":
        return dict(num_res_units=1, preprocessing=dict(input_size=32), **TINY_CNN_CHANNELS)
    if name == "unet_ensemble":
        return dict(
            members=2, num_res_units=1, preprocessing=dict(input_size=32), **TINY_CNN_CHANNELS
        )
    if name == "attention_unet":
        return dict(preprocessing=dict(input_size=32), **TINY_CNN_CHANNELS)
    if name == "res50_unet":
        return dict(
            pretrained=False,
            decoder_channels=(16, 16, 8, 8, 4),
            preprocessing=dict(input_size=32),
        )
    raise AssertionError(f"no tiny configuration for {name}: add one")


BAD_KWARGS = {
    "dinov2": [dict(head_channels=0), dict(decoder_channels=()), dict(size="huge")],
    "unet": [dict(channels=(8,)), dict(channels=(8, 16), strides=(2, 2)), dict(dropout=1.5)],
    "attention_unet": [dict(channels=(8, 16, 32), strides=(2, 0)), dict(in_channels=0)],
    "res50_unet": [dict(decoder_channels=(16, 8))],
    "unet_ensemble": [dict(members=0), dict(channels=(8,))],
}


def test_registry_lists_the_papers_models():
    assert set(list_models()) == EXPECTED_MODELS
    for name in list_models():
        spec = get_spec(name)
        assert spec.family == ("dinov2" if name.startswith("dinov2") else "cnn")
        assert isinstance(spec.preprocessing, Preprocessing)
        assert spec.preprocessing.input_size == (448 if spec.family == "dinov2" else 320)
        # the paper: DINOv2 stretches to 448 with ImageNet statistics; CNNs pad to a square
        fit = "stretch" if spec.family == "dinov2" else "pad"
        assert spec.preprocessing.branches == (BranchInput("through-plane", fit),)
        # only the MONAI UNets take any number of input channels (2.5D); the others take RGB
        assert spec.accepts("in_channels") == (name in ("unet", "attention_unet", "unet_ensemble"))
        assert spec.training["lr"] == (1e-3 if spec.family == "dinov2" else 1e-4)
    with pytest.raises(ValueError, match="unknown model 'vit_huge'"):
        build_model("vit_huge")
    assert ALIASES["default"]() == default_checkpoint_dir()
    assert (default_checkpoint_dir() / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("dinov2_vits14", 21e6, 25e6),  # ViT-S/14 backbone 22 M + head
        ("dinov2_vitb14", 86e6, 90e6),
        ("dinov2_vitl14", 303e6, 308e6),
        ("dinov2_vitg14_reg", 1.13e9, 1.15e9),
        ("res50_unet", 23e6, 40e6),
    ],
)
def test_real_sizes_on_the_meta_device(name, low, high):
    assert low < count_parameters(name) < high


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_tiny_model_forward_and_one_training_step(name):
    torch.manual_seed(0)
    kwargs = tiny_kwargs(name)
    model = build_model(name, **kwargs)
    size = model.preprocessing.input_size
    channels = model.preprocessing.channels
    assert channels == (3 if name.startswith(("dinov2", "res50")) else 1)
    x = torch.randn(2, channels, size, size)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 1, size, size)
    assert torch.isfinite(logits).all()

    trainable = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = (torch.rand(2, 1, size, size) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    optimizer.step()
    changed = [
        k
        for k, p in model.named_parameters()
        if k in trainable and not torch.equal(p, trainable[k])
    ]
    assert len(changed) == len(trainable)  # Adam moves every parameter that got a gradient
    assert all(torch.equal(p, frozen[k]) for k, p in model.named_parameters() if k in frozen)
    if name.startswith("dinov2"):  # frozen backbone by default: only head and decoder learn
        assert frozen and all(k.startswith("net.backbone.") for k in frozen)
        assert all(not k.startswith("net.backbone.") for k in trainable)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_dinov2_token_map_and_trainable_backbone(name):
    kwargs = tiny_kwargs(name)
    model = build_model(name, freeze_backbone=False, **kwargs)
    net = model.net
    assert net.num_prefix_tokens == (3 if name.endswith("_reg") else 1)  # CLS (+ registers)
    tokens = net.backbone_features(torch.randn(1, 3, 56, 70))
    assert tokens.shape == (1, 64, 4, 5)  # 56/14 x 70/14 patch grid, hidden size 64
    assert all(p.requires_grad for p in net.backbone.parameters())
    with pytest.raises(ValueError, match="multiple of 14"):
        net.backbone_features(torch.randn(1, 3, 50, 56))


@pytest.mark.parametrize("family, bad", [(f, b) for f, bads in BAD_KWARGS.items() for b in bads])
def test_bad_arguments_raise_value_error(family, bad):
    name = "dinov2_vits14" if family == "dinov2" else family
    kwargs = {**tiny_kwargs(name), **bad}
    with pytest.raises(ValueError):
        build_model(name, **kwargs)


def test_backbone_from_a_local_folder_offline(tiny_dinov2_dir, offline_hub):
    model = build_model(
        "dinov2_vits14",
        pretrained=True,
        backbone_source=str(tiny_dinov2_dir),
        preprocessing=dict(input_size=56),
        **TINY_DINOV2_KWARGS,
    )
    from transformers import Dinov2Model

    saved = Dinov2Model.from_pretrained(tiny_dinov2_dir).state_dict()
    mine = model.net.backbone.state_dict()
    assert saved.keys() == mine.keys()
    assert all(torch.equal(saved[k], mine[k]) for k in saved)
    # A folder holding a with-registers model is refused for a plain variant, and vice versa.
    with pytest.raises(InputError, match="not dinov2_with_registers"):
        build_model("dinov2_vits14_reg", backbone_source=str(tiny_dinov2_dir), **TINY_DINOV2_KWARGS)


# --- Hugging Face cache, offline ---------------------------------------------------------------


def put_in_hub_cache(folder: Path, repo_id: str, cache: Path) -> None:
    """Lay out ``folder`` the way huggingface_hub caches a download of ``repo_id`` at main:
    ``models--owner--name/snapshots/<commit>/...`` and ``refs/main`` naming the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with an empty cache in tmp: any network attempt fails at once.

    huggingface_hub reads both variables at import, so its constants are patched as well."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_default_backbone_repo_resolved_from_the_cache(tiny_dinov2_dir, offline_hub):
    # The official repo id, as a user who ran once with a network would have it cached.
    put_in_hub_cache(tiny_dinov2_dir, "facebook/dinov2-small", offline_hub)
    model = build_model(
        "dinov2_vits14", preprocessing=dict(input_size=56), **TINY_DINOV2_KWARGS
    )  # pretrained=True, no backbone_source: the hub path
    assert model.net.embed_dim == TINY_DINOV2_CONFIG["hidden_size"]
    assert torch.isfinite(model(torch.randn(1, 3, 56, 56))).all()


def test_uncached_backbone_offline_is_a_clear_input_error(offline_hub):
    with pytest.raises(InputError, match="facebook/dinov2-base.*not in the local Hugging Face"):
        build_model("dinov2_vitb14", **TINY_DINOV2_KWARGS)


def test_checkpoint_repo_id_resolved_from_the_cache(tmp_path, offline_hub):
    model = build_model("unet", **tiny_kwargs("unet"))
    save_checkpoint(model.eval(), tmp_path / "ck", provenance={"data": "synthetic"})
    put_in_hub_cache(tmp_path / "ck", "someone/la-unet", offline_hub)
    loaded = load_model("someone/la-unet")
    assert loaded.model_name == "unet" and loaded.provenance["data"] == "synthetic"
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(model(x), loaded.eval()(x))
    with pytest.raises(InputError, match="someone/missing.*could not be loaded"):
        load_checkpoint("someone/missing")


@pytest.fixture
def no_network(offline_hub, monkeypatch):
    """No network, HF_HUB_OFFLINE unset (a laptop on a train): the hub's host does not resolve.
    The empty cache is offline_hub's; every back-off sleep is recorded instead of slept."""
    import socket
    import time

    import huggingface_hub.constants as constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    return offline_hub, sleeps


def test_without_a_network_the_cache_answers_at_once(tmp_path, tiny_dinov2_dir, no_network):
    """huggingface_hub would retry five times (23 s) before the same answer."""
    cache, sleeps = no_network
    model = build_model("unet", **tiny_kwargs("unet"))
    save_checkpoint(model.eval(), tmp_path / "ck")
    put_in_hub_cache(tmp_path / "ck", "someone/la-unet", cache)
    put_in_hub_cache(tiny_dinov2_dir, "facebook/dinov2-small", cache)
    assert load_model("someone/la-unet").model_name == "unet"
    build_model("dinov2_vits14", preprocessing=dict(input_size=56), **TINY_DINOV2_KWARGS)
    with pytest.raises(InputError, match="someone/missing.*could not be loaded"):
        load_checkpoint("someone/missing")
    with pytest.raises(InputError, match="facebook/dinov2-base.*not in the local Hugging Face"):
        build_model("dinov2_vitb14", **TINY_DINOV2_KWARGS)
    assert sleeps == []  # no retry waited


# --- ResNet50 ImageNet weights from safetensors ------------------------------------------------


def _torchvision_layout_weights(folder: Path, drop: str | None = None) -> dict:
    """A model.safetensors with torchvision's ResNet50 names (MONAI's encoder uses the same)
    plus the ImageNet classifier ``fc``, holding values unlike a fresh initialisation."""
    from monai.networks.nets import FlexibleUNet
    from safetensors.torch import save_file

    encoder = FlexibleUNet(
        in_channels=3, out_channels=1, backbone="resnet50", pretrained=False, spatial_dims=2
    ).encoder
    weights = {
        k: torch.full_like(v, 0.125) if v.is_floating_point() else v
        for k, v in encoder.state_dict().items()
    }
    weights["fc.weight"] = torch.zeros(1000, 2048)
    weights["fc.bias"] = torch.zeros(1000)
    if drop:
        weights = {k: v for k, v in weights.items() if not k.startswith(drop)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"))
    return weights


def test_res50_imagenet_weights_from_a_local_folder(tmp_path):
    weights = _torchvision_layout_weights(tmp_path / "resnet50")
    model = build_model(
        "res50_unet",
        pretrained=True,
        weights_source=str(tmp_path / "resnet50"),
        decoder_channels=(16, 16, 8, 8, 4),
    )
    encoder = model.net.net.encoder.state_dict()
    assert torch.equal(encoder["conv1.weight"], weights["conv1.weight"])
    assert torch.equal(encoder["layer4.2.bn3.running_var"], weights["layer4.2.bn3.running_var"])
    # The rebuilt config does not download again: the weights travel in the checkpoint.
    assert model.config_dict()["model_kwargs"]["pretrained"] is False


def test_res50_weights_with_missing_keys_are_refused(tmp_path, offline_hub):
    _torchvision_layout_weights(tmp_path / "partial", drop="layer4.")
    with pytest.raises(InputError, match="not a torchvision-layout ResNet50.*layer4"):
        build_model("res50_unet", pretrained=True, weights_source=str(tmp_path / "partial"))
    with pytest.raises(InputError, match="timm/resnet50.tv_in1k.*not in the local Hugging Face"):
        build_model("res50_unet", pretrained=True)  # the hub repo, uncached and offline
