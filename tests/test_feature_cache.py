"""Frozen-feature cache: LRU by bytes, disk round trip, content keys, exact tokens, and reuse
across epochs and fine-tuning rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import save_checkpoint
from napari_la_dinov2.training import Case, TrainConfig, finetune, validate
from napari_la_dinov2.training.events import FeaturesComputed
from napari_la_dinov2.training.feature_cache import FeatureCache, backbone_fingerprint, content_key
from napari_la_dinov2.training.finetune import evaluate
from napari_la_dinov2.training.slices import PreparedCase, make_batch
from napari_la_dinov2.training.token_batches import TokenBatches, TokenStore
from napari_la_dinov2.volume_files import VolumeMeta
from tests.conftest import synthetic_case


def _case(name, seed, shape=(40, 36, 6)):
    image, mask = synthetic_case(shape, seed=seed)
    return Case(name, image, mask, VolumeMeta.from_spacing(shape))


def _tensor(mb: float) -> torch.Tensor:
    return torch.zeros(int(mb * 2**20) // 2, dtype=torch.float16)


def test_lru_evicts_least_recently_used_by_bytes():
    cache = FeatureCache(max_bytes=int(2.5 * 2**20))
    cache.put("a", _tensor(1))
    cache.put("b", _tensor(1))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", _tensor(1))  # over budget: b goes, not a
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes_in_memory == 2 * 2**20
    cache.put("huge", _tensor(3))  # larger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    cache.resize(2**20)
    assert len(cache) == 1 and cache.get("c") is not None


def test_disk_cache_survives_a_new_process(tmp_path):
    tokens = torch.randn(3, 8, 4, 4)
    FeatureCache(directory=tmp_path).put("k", tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["k.safetensors"]  # no temporary left
    fresh = FeatureCache(directory=tmp_path)
    loaded = fresh.get("k")
    assert fresh.disk_hits == 1 and loaded.dtype == torch.float16
    torch.testing.assert_close(loaded.float(), tokens, atol=2e-3, rtol=1e-3)
    (tmp_path / "bad.safetensors").write_bytes(b"truncated")
    assert fresh.get("bad") is None  # a damaged file is recomputed, not an error


def test_keys_follow_content_backbone_and_size(tiny_dinov2):
    net = tiny_dinov2.net
    from napari_la_dinov2.models.checkpoint import model_from_config

    same = model_from_config({**tiny_dinov2.config_dict(), "format": "napari-la-dinov2/2"})
    same.load_state_dict(tiny_dinov2.state_dict())
    assert backbone_fingerprint(net) == backbone_fingerprint(same.net)
    with torch.no_grad():
        same.net.backbone.embeddings.patch_embeddings.projection.weight[0, 0, 0, 0] += 1e-3
    assert backbone_fingerprint(net) != backbone_fingerprint(same.net)
    image = np.zeros((4, 4, 2), np.float32)
    assert content_key(image, {"input_size": 112}) == content_key(image.copy(), {"input_size": 112})
    assert content_key(image, {"input_size": 112}) != content_key(image, {"input_size": 224})
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert content_key(image, {"input_size": 112}) != content_key(changed, {"input_size": 112})


def test_cached_tokens_are_the_backbone_features_of_the_training_input(tiny_dinov2):
    model = tiny_dinov2.eval()
    transform = model.branches[0].transform
    prepared = PreparedCase.of(_case("a", 0), transform)
    cache = FeatureCache()
    store = TokenStore(Predictor(model, device="cpu"), cache)
    tokens = store.training_tokens(prepared)
    flipped = store.training_tokens(prepared, flipped=True)
    picks = [(0, s) for s in range(prepared.images.shape[0])]
    x, _ = make_batch([prepared], picks, transform)  # no augmentation
    with torch.no_grad():
        expected = model.net.backbone_features(x)
        expected_flip = model.net.backbone_features(x.flip(-1))
    torch.testing.assert_close(tokens.float(), expected, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(flipped.float(), expected_flip, atol=1e-2, rtol=1e-2)
    assert not torch.allclose(flipped.float(), tokens.float())  # a ViT is not flip-equivariant
    assert torch.equal(store.training_tokens(prepared), tokens) and cache.hits == 1  # no work


def test_finetune_reuses_tokens_across_epochs_and_rounds(tiny_dinov2, tmp_path):
    checkpoint = save_checkpoint(tiny_dinov2, tmp_path / "tiny")
    train = [_case("a", 0), _case("b", 1)]
    val = [_case("v", 2)]
    cache = FeatureCache()
    config = TrainConfig(
        model=str(checkpoint),
        epochs=2,
        batch_size=4,
        steps_per_epoch=2,
        lr=1e-3,
        output_dir=str(tmp_path / "round1"),
        device="cpu",
    )
    events = []
    first = finetune(train, config, val_cases=val, cache=cache, progress=events.append)
    features = [e for e in events if isinstance(e, FeaturesComputed)]
    assert features[-1].done == features[-1].total == 5  # 2 cases, 2 mirrored, 1 val
    assert cache.misses == 5 and len(first.history) == 2
    assert json.loads((tmp_path / "round1" / "config.json").read_text(encoding="utf-8"))[
        "feature_cache_used"
    ]

    # A correction round: the same images with edited labels and two more epochs; the backbone
    # is the checkpoint's, so every token map is found in the cache.
    train[0].labels[:, :, 0] = 0
    config.output_dir = str(tmp_path / "round2")
    finetune(train, config, val_cases=val, cache=cache)
    assert cache.misses == 5 and cache.hits >= 5

    # Validation on cached tokens is the Predictor's result on the volume.
    from napari_la_dinov2.models import load_model

    best = load_model(first.best_checkpoint)
    predictor = Predictor(best, device="cpu", batch_size=16)
    batches = TokenBatches(
        predictor,
        train[:1],
        val,
        cache=FeatureCache(),
        flips=False,
        generator=torch.Generator(),
        sampling={},
    )
    cached = evaluate(predictor, val, batches)
    assert cached == pytest.approx(validate(best, val, "cpu"), abs=0.01)


def test_feature_cache_on_needs_a_frozen_backbone(tmp_path, tiny_unet):
    checkpoint = save_checkpoint(tiny_unet, tmp_path / "unet")
    config = TrainConfig(model=str(checkpoint), feature_cache="on", output_dir=str(tmp_path / "r"))
    from napari_la_dinov2.errors import InputError

    with pytest.raises(InputError, match="frozen backbone"):
        finetune([_case("a", 0)], config)
