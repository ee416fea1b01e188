"""Bounds on what a model description can make the process allocate.

A checkpoint's ``config.json`` or a training config names a network and its widths; before
the network is built for real it is built on the meta device (no memory, no download), its
parameters are counted and one slice is passed through it to measure the activations, and
anything beyond a sane bound is refused with one sentence. A checkpoint's weights file is
compared with the meta network (names and shapes, read from the safetensors header) before
the real build, so a file that cannot fit costs no model build.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

# DINOv2-g/14 with the paper's head has 1.14e9 parameters; nothing we ship comes close to 2e9.
MAX_PARAMETERS = 2_000_000_000
# The outputs of every layer for one slice at batch 1 (the paper's DINOv2-g at 448: ~3 GiB).
MAX_SLICE_ACTIVATION_BYTES = 24 * 2**30


def meta_network(builder, kwargs: dict) -> nn.Module:
    """The network ``builder(**kwargs)`` builds, on the meta device (no memory, no download:
    a pretrained flag is turned off). Its TypeError/ValueError pass through."""
    kwargs = dict(kwargs)
    if "pretrained" in inspect.signature(builder).parameters:
        kwargs["pretrained"] = False
    try:
        with torch.device("meta"):
            return builder(**kwargs)
    except (TypeError, ValueError):
        raise
    except (RuntimeError, OverflowError, MemoryError) as error:
        raise InputError(
            f"the network cannot be built with these settings ({error.__class__.__name__}); "
            "its widths are out of range."
        ) from None


def slice_activation_bytes(net: nn.Module, channels: int, size: int) -> int | None:
    """Bytes of every leaf layer's output for one ``channels x size x size`` slice, measured
    on the meta device; None where the network cannot run on it."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if torch.is_tensor(tensor):
                total += tensor.numel() * tensor.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, channels, size, size), device="meta"))
    except Exception:  # an operation the meta device lacks: no estimate, the real run decides
        return None
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return total


# The shipped architectures' activations for one slice, as slice_activation_bytes measures
# them (tests/test_limits.py measures each again): a cold start of the embedded default skips
# the meta pass, whose first operation imports TorchDynamo (PyTorch runs meta operations
# through its decompositions), which takes about as long as importing torch itself.
MEASURED_ACTIVATION_BYTES = {
    (
        "unet_ensemble",
        '{"channels": [16, 32, 64, 128, 256], "dropout": 0.0, "in_channels": 3, "members": 3, '
        '"num_res_units": 2, "strides": [2, 2, 2, 2]}',
        3,
        192,
    ): 64364544,
}


def architecture_key(name: str, kwargs: dict, channels: int, size: int) -> tuple | None:
    """What identifies a network's activations: its name, settings, input channels and size."""
    try:
        return name, json.dumps(kwargs, sort_keys=True), channels, size
    except (TypeError, ValueError):  # settings that are no JSON are never in the table
        return None


def check_footprint(
    net: nn.Module, name: str, channels: int, size: int, kwargs: dict | None = None
) -> None:
    """Refuse a (meta) network whose parameters or per-slice activations are beyond bounds."""
    parameters = sum(p.numel() for p in net.parameters())
    if parameters > MAX_PARAMETERS:
        raise InputError(
            f"the {name!r} network these settings describe has {parameters:.3g} parameters, "
            f"more than the {MAX_PARAMETERS:.0e} this tool builds; check its widths."
        )
    known = MEASURED_ACTIVATION_BYTES.get(architecture_key(name, kwargs or {}, channels, size))
    activations = known if known is not None else slice_activation_bytes(net, channels, size)
    if activations is not None and activations > MAX_SLICE_ACTIVATION_BYTES:
        raise InputError(
            f"the {name!r} network these settings describe needs {activations / 2**30:.0f} GiB "
            f"of activations for one {size}x{size} slice, more than the "
            f"{MAX_SLICE_ACTIVATION_BYTES // 2**30} GiB this tool allows; check its widths "
            "and input size."
        )


def check_weights_fit(model: nn.Module, weights_file: Path) -> None:
    """Compare the tensors a (meta) model needs with the names and shapes in a safetensors
    file's header, without reading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            stored = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:
        raise InputError(
            f"{weights_file} is not a readable safetensors file ({error.__class__.__name__})."
        ) from None
    needed = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    missing = sorted(needed.keys() - stored.keys())
    extra = sorted(stored.keys() - needed.keys())
    wrong = sorted(k for k in needed.keys() & stored.keys() if needed[k] != stored[k])
    if missing or extra or wrong:
        if wrong:
            what = f"{wrong[0]} is {stored[wrong[0]]} in the file, {needed[wrong[0]]} in the model"
        elif missing:
            what = f"{len(missing)} tensors are missing, first {missing[0]}"
        else:
            what = f"{len(extra)} tensors are not in the model, first {extra[0]}"
        raise InputError(
            f"the weights in {weights_file} do not fit the model its config.json describes "
            f"({what})."
        )
