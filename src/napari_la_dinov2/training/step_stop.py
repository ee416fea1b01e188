"""Stopping inside a training step, not only between steps.

A step of the embedded default model (three UNets, a batch of each view) takes seconds on a busy
CPU: a stop flag read only between steps kept a closed viewer waiting that long. While a run
trains, every leaf layer reads the flag before its forward pass and every trainable weight as its
gradient arrives, so a step ends within one layer's work. It ends before the optimiser steps, so
the weights stay those of the last whole step (its partial gradients are never applied); the
checkpoints on disk are only written between epochs, atomically. A run spread over processes
(DDP) finishes its step instead: its ranks must take every step together.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import raise_if_cancelled


@contextmanager
def stop_within_steps(module: torch.nn.Module, stop, enabled: bool = True):
    """While inside, ``module``'s forward and backward passes raise ``CancelledError`` as soon
    as ``stop`` (a threading.Event or callable, or None) is up."""
    if stop is None or not enabled:
        yield
        return

    def check(*_args) -> None:
        raise_if_cancelled(stop, "inside a training step")

    leaves = [layer for layer in module.modules() if next(layer.children(), None) is None]
    handles = [layer.register_forward_pre_hook(check) for layer in leaves]
    handles += [
        weight.register_hook(check) for weight in module.parameters() if weight.requires_grad
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
