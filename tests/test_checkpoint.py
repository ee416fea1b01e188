"""Checkpoints: safetensors + config.json that rebuild the exact model; no pickle; atomic save."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from napari_la_dinov2.errors import InputError
from napari_la_dinov2.models import (
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from napari_la_dinov2.models import checkpoint as checkpoint_module


def _perturb(model):
    """Move every weight and BatchNorm statistic off its initial value, so a load that silently
    kept the fresh initialisation would be caught."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)
    return model.eval()


@pytest.mark.parametrize("which", ["tiny_dinov2", "tiny_unet"])
def test_round_trip_gives_identical_outputs(which, request, tmp_path):
    model = _perturb(request.getfixturevalue(which))
    provenance = {"dataset": "synthetic", "epochs": 3, "val_dice": 0.5}
    save_checkpoint(model, tmp_path / "ck", provenance=provenance)
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "ck").iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    loaded = load_checkpoint(tmp_path / "ck").eval()
    size = model.preprocessing.input_size
    x = torch.randn(2, model.preprocessing.channels, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.model_name == model.model_name and loaded.family == model.family
    assert loaded.preprocessing == model.preprocessing
    assert loaded.provenance == provenance

    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    assert {"model", "model_kwargs", "preprocessing", "provenance"} <= set(config)
    assert config["model"] == model.model_name
    assert config["preprocessing"]["input_size"] == size
    assert config["provenance"]["val_dice"] == 0.5
    # The config rebuilds the architecture with no download (random weights, no hub access).
    assert config["model_kwargs"].get("pretrained", False) is False
    rebuilt = checkpoint_module.model_from_config(config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert config["format"] == checkpoint_module.CHECKPOINT_FORMAT


def test_dinov2_checkpoint_keeps_the_backbone_architecture(tiny_dinov2, tmp_path):
    save_checkpoint(tiny_dinov2, tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    backbone = config["model_kwargs"]["backbone_config"]
    assert backbone["hidden_size"] == 64 and backbone["num_hidden_layers"] == 2
    assert load_model(tmp_path / "ck").net.embed_dim == 64  # load_model takes a folder too


class _Trap:
    """Unpickling this creates a file: proof that a loader ran code from the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_pickled_files_are_refused_unopened(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": _Trap(marker)}))
    with pytest.raises(InputError, match=f"model{suffix}.*pickled"):
        load_checkpoint(path)
    with pytest.raises(InputError, match="pickled"):
        load_model(str(path))
    assert not marker.exists()


def test_folder_without_safetensors_is_refused(tiny_unet, tmp_path):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "old-style"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    (folder / "config.json").write_text(json.dumps(tiny_unet.config_dict()))
    with pytest.raises(InputError, match="old-style.*model.safetensors.*pytorch_model.bin"):
        load_checkpoint(folder)
    assert not marker.exists()

    save_checkpoint(tiny_unet, tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json is not valid JSON"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"model": "resnet9000"}))
    with pytest.raises(InputError, match="not a napari-la-dinov2 checkpoint"):
        load_checkpoint(tmp_path / "ck")


def test_names_that_are_not_checkpoints(tmp_path):
    with pytest.raises(InputError, match="neither a model name"):
        load_model("no such thing")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="is a file; a checkpoint is a folder"):
        load_checkpoint(tmp_path / "weights.safetensors")


def test_missing_default_model_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setitem(checkpoint_module.ALIASES, "default", lambda: tmp_path / "none")
    with pytest.raises(InputError, match="shipped model 'default' is missing"):
        load_model("default")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tiny_unet, tmp_path, monkeypatch):
    first = _perturb(tiny_unet)
    save_checkpoint(first, tmp_path / "best", provenance={"epoch": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "best").iterdir()}

    second = build_model("unet", preprocessing={"input_size": 64}, **_unet_kwargs())

    def crash_midway(folder):  # the files are written, but the save never completes
        raise KeyboardInterrupt("killed while saving")

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(second, tmp_path / "best", provenance={"epoch": 2}, extra=crash_midway)

    after = {p.name: p.read_bytes() for p in (tmp_path / "best").iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # staging folder removed
    assert load_checkpoint(tmp_path / "best").provenance["epoch"] == 1


def _unet_kwargs():
    from tests.conftest import TINY_UNET_KWARGS

    return TINY_UNET_KWARGS


def test_the_skeleton_is_materialized_only_where_the_file_fills_every_tensor():
    """load_checkpoint gives the meta skeleton real, uninitialised tensors instead of building
    the network again; a buffer outside the state dict or a shared parameter would be left
    as garbage or untied, so those networks are built for real."""
    materialize = checkpoint_module._materialize
    with torch.device("meta"):
        plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
        with_buffer = torch.nn.Linear(2, 2)
        with_buffer.register_buffer("scale", torch.ones(2), persistent=False)
        shared = torch.nn.Linear(2, 2)
        tied = torch.nn.Sequential(shared, shared)
    real = materialize(plain, "cpu")
    assert real is not None
    assert all(t.device.type == "cpu" for t in real.state_dict().values())
    assert materialize(with_buffer, "cpu") is None
    assert materialize(tied, "cpu") is None
