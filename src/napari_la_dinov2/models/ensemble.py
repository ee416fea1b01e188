"""Several UNets of one architecture whose logits are averaged: a small ensemble as one model.

Two kinds, told apart by ``preprocessing["views"]``:

- one view: every member sees the same slices and ``forward`` averages their logits (members
  trained with different seeds; on the LA 2018 data they erred on the same voxels and gained
  nothing, see training/default_model/README.md);
- one view per member (a multi-view ensemble): each member cuts the volume along its own axis
  (axial, sagittal, coronal for an axial scan) and the Predictor averages their logits on the
  volume's grid. Models that look along different axes make different errors, so this one
  does gain. Fine-tuning trains each member on slices of its own view. Members may fit their
  slices to the square input differently (``preprocessing["fits"]``, one per view).

Packed as one registry model, an ensemble is one checkpoint folder, runs through the same
Predictor, and can be fine-tuned like any other model. :func:`ensemble_of` packs separately
trained UNet checkpoints into one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..preprocess import DEFAULT_VIEWS, views_of
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


def ensemble_of(models: list, provenance: dict | None = None, views: list | None = None):
    """One ``unet_ensemble`` LASegmenter holding the weights of ``models`` (trained ``unet``
    checkpoints of the same architecture and preprocessing, each of one view; members of a
    multi-view ensemble may differ in ``fit``). Members of different views make a multi-view
    ensemble; ``views`` overrides the members' own (for a member trained on a copy of the data
    whose affine names another slice axis). Each member's provenance is kept under
    ``provenance["members"]``; ``trained_on`` and ``validated_on`` list the cases any member saw,
    so the cases none saw can still be told from the ensemble."""
    from .checkpoint import LASegmenter

    if not models:
        raise InputError("give at least one trained UNet checkpoint to build an ensemble.")
    if views is not None and len(views) != len(models):
        raise InputError(f"{len(views)} views given for {len(models)} members.")
    first = models[0]
    member_views, member_fits = [], []
    for index, model in enumerate(models):
        own = views_of(model.preprocessing)
        if len(own) != 1:
            raise InputError(f"member {index} is itself multi-view; pack single-view models.")
        member_views.append(views[index] if views is not None else own[0])
        member_fits.append(model.preprocessing.get("fit"))
        if model.model_name != "unet":
            raise InputError(
                f"member {index} is a {model.model_name!r} model; an ensemble packs 'unet' models."
            )
        if model.net.rebuild_kwargs() != first.net.rebuild_kwargs():
            raise InputError(f"member {index} has another architecture than member 0.")
        if _shared_preprocessing(model.preprocessing) != _shared_preprocessing(first.preprocessing):
            raise InputError(
                f"member {index} was trained with other preprocessing than member 0 "
                f"({model.preprocessing} vs {first.preprocessing})."
            )
    multi_view = len(set(member_views)) > 1
    if len(set(member_fits)) > 1 and not multi_view:
        raise InputError(
            "members of one view must fit their slices alike; only the members of a "
            f"multi-view ensemble may differ (fits: {', '.join(map(str, member_fits))})."
        )
    preprocessing = {**_shared_preprocessing(first.preprocessing), "fit": member_fits[0]}
    if len(set(member_fits)) > 1:
        preprocessing["fits"] = member_fits
    if multi_view:
        preprocessing["views"] = member_views
    elif member_views[0] != DEFAULT_VIEWS[0]:
        preprocessing["views"] = member_views[:1]
    ensemble = LASegmenter(
        model="unet_ensemble",
        model_kwargs={"members": len(models), **first.net.rebuild_kwargs()},
        preprocessing=preprocessing,
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


def _shared_preprocessing(preprocessing: dict) -> dict:
    """What every member must share: all but the view and the fit, kept per member."""
    return {k: v for k, v in preprocessing.items() if k not in ("views", "fit", "fits")}


def _union(lists) -> list:
    return list(dict.fromkeys(item for items in lists for item in items))
