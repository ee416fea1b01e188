"""Several UNets of one architecture whose logits are averaged: a small ensemble as one model.

Networks trained with different seeds err in different places; averaging their logits (as the
Predictor already averages a slice with its mirror image) gives a smoother, more accurate mask.
Packed as one registry model, an ensemble is one checkpoint folder, runs through the same
Predictor, and can be fine-tuned like any other model (its members then train together on the
averaged output). :func:`ensemble_of` packs separately trained UNet checkpoints into one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .baselines import UNet2D


class UNetEnsemble2D(nn.Module):
    family = "cnn"

    def __init__(self, *, members: int = 3, **unet_kwargs):
        super().__init__()
        if int(members) < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.members = nn.ModuleList(UNet2D(**unet_kwargs) for _ in range(int(members)))

    def rebuild_kwargs(self) -> dict:
        # Flat: the members' UNet arguments (in_channels among them) plus their number.
        return {"members": len(self.members), **self.members[0].rebuild_kwargs()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def ensemble_of(models: list, provenance: dict | None = None):
    """One ``unet_ensemble`` LASegmenter holding the weights of ``models`` (trained ``unet``
    checkpoints of the same architecture and preprocessing). Each member's provenance is kept
    under ``provenance["members"]``; ``trained_on`` and ``validated_on`` list the cases any
    member saw, so the cases none saw can still be told from the ensemble alone."""
    from .checkpoint import LASegmenter

    if not models:
        raise InputError("give at least one trained UNet checkpoint to build an ensemble.")
    first = models[0]
    for index, model in enumerate(models):
        if model.model_name != "unet":
            raise InputError(
                f"member {index} is a {model.model_name!r} model; an ensemble packs 'unet' models."
            )
        if model.net.rebuild_kwargs() != first.net.rebuild_kwargs():
            raise InputError(f"member {index} has another architecture than member 0.")
        if model.preprocessing != first.preprocessing:
            raise InputError(
                f"member {index} was trained with other preprocessing than member 0 "
                f"({model.preprocessing} vs {first.preprocessing})."
            )
    ensemble = LASegmenter(
        model="unet_ensemble",
        model_kwargs={"members": len(models), **first.net.rebuild_kwargs()},
        preprocessing=first.preprocessing,
        provenance={
            "trained_on": _union(m.provenance.get("trained_on", []) for m in models),
            "validated_on": _union(m.provenance.get("validated_on", []) for m in models),
            **(provenance or {}),
            "members": [dict(m.provenance) for m in models],
        },
    )
    for member, model in zip(ensemble.net.members, models, strict=True):
        member.load_state_dict(model.net.state_dict())
    return ensemble


def _union(lists) -> list:
    return list(dict.fromkeys(item for items in lists for item in items))
