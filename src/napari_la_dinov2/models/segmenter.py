"""The segmenter: a registry network, the input it expects and where it came from.

A model is a list of :class:`Branch` objects, each a view of the volume, its slice transform
and the network that sees it: one branch for a single network, one per member for a multi-view
ensemble (the Predictor averages the branches' logits on the volume's grid). The network's
number of input channels is derived from the preprocessing, never stated twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..preprocess import Preprocessing, SliceTransform
from .limits import check_footprint, meta_network
from .registry import get_spec


@dataclass(frozen=True, eq=False)
class Branch:
    """One view of a model: slices cut along ``view``, prepared by ``transform``, seen by
    ``net`` (``BxCxSxS -> Bx1xSxS`` logits)."""

    view: str
    transform: SliceTransform
    net: nn.Module


class LASegmenter(nn.Module):
    """A registry network plus its input and provenance. ``forward(BxCxSxS) -> Bx1xSxS``."""

    def __init__(
        self,
        model: str,
        model_kwargs: dict | None = None,
        preprocessing: Preprocessing | dict | None = None,
        provenance: dict | None = None,
    ):
        super().__init__()
        try:
            self.spec = get_spec(model)
            base = self.spec.preprocessing
            self.preprocessing = (
                preprocessing
                if isinstance(preprocessing, Preprocessing)
                else base.updated(preprocessing)
            )
        except ValueError as error:
            raise InputError(f"{error}.") from None
        self.model_name = model
        self.family = self.spec.family
        self.net = self._build(dict(model_kwargs or {}))
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.branches = self._branches()

    def _build(self, kwargs: dict) -> nn.Module:
        channels = self.preprocessing.channels
        if self.spec.accepts("in_channels"):
            stated = kwargs.pop("in_channels", channels)
            if stated != channels:
                raise InputError(
                    f"model_kwargs.in_channels={stated} does not fit the preprocessing, which "
                    f"gives {channels} channel(s); leave in_channels out (it is derived)."
                )
            kwargs["in_channels"] = channels
        elif channels != 3:
            raise InputError(
                f"the {self.model_name!r} network takes 3 input channels, but context "
                f"{self.preprocessing.context} gives {channels}; use context 0 or 1."
            )
        kwargs = {**self.spec.defaults, **kwargs}
        try:  # first on the meta device: a hostile width costs no memory
            skeleton = meta_network(self.spec.builder, kwargs)
            size = self.preprocessing.input_size
            check_footprint(skeleton, self.model_name, channels, size, kwargs)
            if _building_on_meta() and not kwargs.get("pretrained"):
                return skeleton  # a checkpoint's skeleton: the same network, built once
            return self.spec.builder(**kwargs)
        except InputError:
            raise
        except (TypeError, ValueError) as error:  # a setting of another model, a bad width
            raise InputError(
                f"model_kwargs do not fit the {self.model_name!r} model: {error}."
            ) from None

    def _branches(self) -> tuple[Branch, ...]:
        transforms = self.preprocessing.transforms()
        if len(transforms) == 1:
            return (Branch(transforms[0].view, transforms[0], self.net),)
        members = getattr(self.net, "members", None)
        if members is None or len(members) != len(transforms):
            count = "no members" if members is None else f"{len(members)} members"
            raise InputError(
                f"preprocessing names {len(transforms)} views but the {self.model_name!r} "
                f"network has {count}; a multi-view model needs one member per view "
                "(unet_ensemble)."
            )
        return tuple(Branch(t.view, t, m) for t, m in zip(transforms, members, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def display_name(self) -> str:
        return self.provenance.get("display_name", self.model_name)

    @property
    def is_trained(self) -> bool:
        """Whether its weights learnt to segment (its provenance names training cases)."""
        return bool(self.provenance.get("trained_on"))

    def untrained_warning(self) -> str | None:
        """The sentence to show before using a model whose segmentation weights are random."""
        if self.is_trained:
            return None
        return (
            f"'{self.display_name}' has no trained segmentation weights: its mask is "
            "meaningless; fine-tune it first or choose a trained checkpoint."
        )

    def unseen(self, case_names) -> list[str]:
        """The names among ``case_names`` that this model was neither trained nor validated on
        (as its provenance lists them), in order: where it can be shown or tested honestly."""
        seen = {*self.provenance.get("trained_on", []), *self.provenance.get("validated_on", [])}
        return [name for name in case_names if name not in seen]

    def config_dict(self) -> dict:
        """What ``config.json`` holds: enough to rebuild this exact model offline."""
        kwargs = self.net.rebuild_kwargs()
        kwargs.pop("in_channels", None)  # derived from the preprocessing
        return dict(
            model=self.model_name,
            model_kwargs=kwargs,
            preprocessing=self.preprocessing.to_dict(),
            provenance=self.provenance,
        )


def build_model(name: str, *, preprocessing: dict | None = None, **model_kwargs) -> LASegmenter:
    """A registry model with fresh (untrained) segmentation weights. ``model_kwargs`` override
    the spec's defaults (e.g. ``pretrained=False`` for a random backbone, ``backbone_config=``
    for a tiny test backbone)."""
    return LASegmenter(name, model_kwargs, preprocessing)


def _building_on_meta() -> bool:
    """Whether new tensors land on the meta device (a ``with torch.device("meta")`` block)."""
    return torch.empty(()).device.type == "meta"
