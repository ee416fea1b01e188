"""End-to-end training batches: each branch's slices, sampled, augmented and standardised,
through its own network (one network, or one per member of a multi-view model).

:class:`SliceBatches` is one way to get a batch; :class:`~.token_batches.TokenBatches` (cached
token maps of a frozen backbone) is the other. Both give ``(inputs, targets)`` as one tensor
per branch and the ``module`` that maps the inputs to logits.
"""

from __future__ import annotations

import torch

from .slices import Augmentation, PreparedCase, SliceSampler, make_batch


class ViewBranches(torch.nn.Module):
    """The networks of a model's branches as one module (what DDP wraps): ``forward(x_1, ...,
    x_n)`` gives each network's logits for its own branch's batch."""

    def __init__(self, networks: list[torch.nn.Module]):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, *batches: torch.Tensor) -> list[torch.Tensor]:
        return [net(x) for net, x in zip(self.networks, batches, strict=True)]


class SliceBatches:
    """Slices of every branch's view; the same picks' positions in each branch's sampler."""

    def __init__(self, model, train_cases, *, augment: bool, seed: int, sampling: dict):
        self.transforms = [branch.transform for branch in model.branches]
        self.prepared = [[PreparedCase.of(c, t) for c in train_cases] for t in self.transforms]
        self.samplers = [SliceSampler(p, **sampling) for p in self.prepared]
        self.pipelines = [
            Augmentation().transform(seed * 100 + index) if augment else None
            for index in range(len(self.transforms))
        ]
        self.module = ViewBranches([branch.net for branch in model.branches])
        self.picks: list[list[tuple[int, int]]] = []

    def __len__(self) -> int:
        return len(self.samplers[0])

    def new_epoch(self, rng, count: int) -> None:
        self.picks = [sampler.epoch(rng, count) for sampler in self.samplers]

    def batch(self, offset: int, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pairs = [
            make_batch(cases, picks[offset : offset + size], transform, pipeline)
            for cases, picks, transform, pipeline in zip(
                self.prepared, self.picks, self.transforms, self.pipelines, strict=True
            )
        ]
        return [x for x, _ in pairs], [y for _, y in pairs]

    def logits_source(self, predictor, case):
        return None  # the Predictor's own networks
