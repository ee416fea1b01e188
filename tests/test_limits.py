"""The table of shipped architectures' activations is what the meta pass measures, so skipping
the pass for them (a faster cold start) refuses and allows exactly what it would."""

from __future__ import annotations

import json

import pytest

from napari_la_dinov2.models import limits
from napari_la_dinov2.models.registry import get_spec


@pytest.mark.parametrize("key", sorted(limits.MEASURED_ACTIVATION_BYTES))
def test_the_table_holds_what_the_meta_pass_measures(key):
    name, kwargs, channels, size = key
    spec = get_spec(name)
    net = limits.meta_network(spec.builder, {**spec.defaults, **json.loads(kwargs)})
    measured = limits.slice_activation_bytes(net, channels, size)
    assert measured == limits.MEASURED_ACTIVATION_BYTES[key]


def test_the_default_loads_without_the_meta_pass(monkeypatch):
    """The embedded default's architecture is in the table: loading it runs no meta forward
    (whose decompositions would import TorchDynamo, a second or so of every cold start)."""
    from napari_la_dinov2.models import load_model

    calls = []
    original = limits.slice_activation_bytes
    monkeypatch.setattr(
        limits, "slice_activation_bytes", lambda *args: calls.append(args) or original(*args)
    )
    load_model("default")
    assert calls == []


def test_a_setting_outside_the_table_is_measured():
    (key, shipped), *_ = limits.MEASURED_ACTIVATION_BYTES.items()
    spec = get_spec(key[0])
    kwargs = dict(json.loads(key[1]), strides=[1, 1, 1, 1])  # the same weights, 256x the pixels
    assert limits.architecture_key(key[0], kwargs, *key[2:]) not in limits.MEASURED_ACTIVATION_BYTES
    net = limits.meta_network(spec.builder, kwargs)
    assert limits.slice_activation_bytes(net, *key[2:]) > shipped
