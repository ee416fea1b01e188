"""Packing trained checkpoints into one: ``ensemble_of`` makes a ``unet_ensemble`` model of
separately trained UNets (members of different views make a multi-view model, as the embedded
default is)."""

from __future__ import annotations

from ..errors import InputError
from ..preprocess import BranchInput
from .segmenter import LASegmenter


def ensemble_of(models: list, provenance: dict | None = None, views: list | None = None):
    """One ``unet_ensemble`` LASegmenter holding the weights of ``models`` (trained ``unet``
    checkpoints of the same architecture and input, each of one view; members of a multi-view
    ensemble may differ in ``fit``). ``views`` overrides the members' own (for a member trained
    on a copy of the data whose affine names another slice axis). Each member's provenance is
    kept under ``provenance["members"]``; ``trained_on`` and ``validated_on`` list the cases any
    member saw, so the cases none saw can still be told from the ensemble."""
    if not models:
        raise InputError("give at least one trained UNet checkpoint to build an ensemble.")
    if views is not None and len(views) != len(models):
        raise InputError(f"{len(views)} views given for {len(models)} members.")
    branches = [_member_branch(i, m, models[0]) for i, m in enumerate(models)]
    if views is not None:
        branches = [BranchInput(view=v, fit=b.fit) for v, b in zip(views, branches, strict=True)]
    multi_view = len({b.view for b in branches}) > 1
    if not multi_view and len({b.fit for b in branches}) > 1:
        raise InputError(
            "members of one view must fit their slices alike; only the members of a "
            f"multi-view ensemble may differ (fits: {', '.join(b.fit for b in branches)})."
        )
    preprocessing = models[0].preprocessing.with_branches(branches if multi_view else branches[:1])
    ensemble = LASegmenter(
        "unet_ensemble",
        {**models[0].config_dict()["model_kwargs"], "members": len(models)},
        preprocessing,
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


def _member_branch(index: int, model: LASegmenter, first: LASegmenter) -> BranchInput:
    """The member's one branch, after checking it can join ``first`` in an ensemble."""
    if len(model.branches) != 1:
        raise InputError(f"member {index} is itself multi-view; pack single-view models.")
    if model.model_name != "unet":
        raise InputError(
            f"member {index} is a {model.model_name!r} model; an ensemble packs 'unet' models."
        )
    if model.net.rebuild_kwargs() != first.net.rebuild_kwargs():
        raise InputError(f"member {index} has another architecture than member 0.")
    ours, theirs = model.preprocessing, first.preprocessing
    if ours.with_branches(theirs.branches) != theirs:
        raise InputError(
            f"member {index} was trained with another input than member 0 "
            f"({ours.to_dict()} vs {theirs.to_dict()})."
        )
    return ours.branches[0]


def _union(lists) -> list:
    return list(dict.fromkeys(item for items in lists for item in items))
