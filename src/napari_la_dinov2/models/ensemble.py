"""Several UNets of one architecture whose logits are averaged: a small ensemble as one network.

With one view, every member sees the same slices and ``forward`` averages their logits (members
trained with different seeds; on the LA 2018 data they erred on the same voxels and gained
nothing, see training/default_model/README.md). With one view per member (a multi-view model,
set by the segmenter's preprocessing), each member is a branch of its own: it cuts the volume
along its own axis and the Predictor averages the members' logits on the volume's grid.
:func:`~.packing.ensemble_of` packs separately trained UNet checkpoints into one.
"""

from __future__ import annotations

import torch
from torch import nn

from .baselines import UNet2D

MAX_MEMBERS = 16  # a checkpoint cannot make the process build more


class UNetEnsemble2D(nn.Module):
    family = "cnn"

    def __init__(self, *, members: int = 3, in_channels: int = 1, **unet_kwargs):
        super().__init__()
        if not isinstance(members, int) or not 1 <= members <= MAX_MEMBERS:
            raise ValueError(f"an ensemble has 1 to {MAX_MEMBERS} members, not {members!r}")
        self.members = nn.ModuleList(
            UNet2D(in_channels=in_channels, **unet_kwargs) for _ in range(members)
        )

    def rebuild_kwargs(self) -> dict:
        # Flat: the members' UNet arguments plus their number.
        return {"members": len(self.members), **self.members[0].rebuild_kwargs()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
