"""The project's UNet (models/unet.py) is MONAI's UNet: same parameter names and shapes (a
state dict of one loads into the other with strict=True) and bit-identical logits."""

from __future__ import annotations

import pytest
import torch

from napari_la_dinov2.models.unet import UNet

CONFIGS = [
    dict(channels=(4, 8, 16), strides=(2, 2), num_res_units=2, dropout=0.0),  # the default's kind
    dict(channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1, dropout=0.1),
    dict(channels=(4, 8), strides=(2,), num_res_units=0, dropout=0.0),
]


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and batch-norm statistics (a trained net's are not the defaults)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) * 0.5 + 0.1
                tensor.copy_(values if name.endswith("running_var") else values - 0.3)
    return net.eval()


@pytest.mark.parametrize("config", CONFIGS)
def test_same_parameters_and_bit_identical_logits_as_monai(config):
    from monai.networks.nets import UNet as MonaiUNet

    kwargs = dict(in_channels=3, out_channels=1, **config)
    monai = _randomised(MonaiUNet(spatial_dims=2, norm="batch", **kwargs), seed=0)
    ours = UNet(**kwargs).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in monai.state_dict().items()
    }
    ours.load_state_dict(monai.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(ours(x), monai(x))


def test_the_default_models_members_are_monais_unet_to_the_bit():
    """The embedded default model's weights in MONAI's class and in ours: the same logits."""
    from monai.networks.nets import UNet as MonaiUNet

    from napari_la_dinov2.models import load_model

    x = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    for branch in load_model("default").branches:
        ours, kwargs = branch.net.net.eval(), branch.net.rebuild_kwargs()
        kwargs.update(channels=tuple(kwargs["channels"]), strides=tuple(kwargs["strides"]))
        monai = MonaiUNet(spatial_dims=2, out_channels=1, norm="batch", **kwargs).eval()
        monai.load_state_dict(ours.state_dict(), strict=True)
        with torch.inference_mode():
            assert torch.equal(ours(x), monai(x))
