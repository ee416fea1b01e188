"""Training on cached token maps: with a frozen DINOv2 backbone, each slice's token map is
computed once (see :mod:`.feature_cache`) and only the decoder trains.

:class:`TokenBatches` is the cached way to get a batch, beside :class:`~.batches.SliceBatches`;
the fine-tuning loop does not know which one it holds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import raise_if_cancelled
from ..inference import Predictor
from .events import FeaturesComputed
from .feature_cache import TOKEN_DTYPE, FeatureCache, backbone_fingerprint, content_key
from .slices import PreparedCase, SliceSampler


class CachedDecoder(nn.Module):
    """The trainable part on cached tokens: ``forward(BxCxhxw tokens) -> Bx1xSxS`` logits.
    A module of its own so DDP can wrap it (DDP only syncs gradients through ``forward``)."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net = net
        self.size = (int(size), int(size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net.decode(tokens, self.size)


class TokenStore:
    """Computes (once) and looks up the token maps of a run's cases."""

    def __init__(self, predictor: Predictor, cache: FeatureCache, stop=None):
        self.predictor, self.cache, self.stop = predictor, cache, stop
        self.net = predictor.branches[0].net
        self.transform = predictor.branches[0].transform
        self.settings = predictor.model.preprocessing.to_dict()
        self.backbone = backbone_fingerprint(self.net)

    def _tokens(self, key: str, count: int, batch_of) -> torch.Tensor:
        """``SxCxhxw`` float16 tokens: from the cache, else computed a batch at a time."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        out, size = [], self.predictor.batch_size
        was_training = self.net.training
        self.net.eval()
        device, dtype = self.predictor.device, self.predictor.dtype
        with torch.inference_mode():
            for start in range(0, count, size):
                raise_if_cancelled(self.stop, "while computing the backbone features")
                x = batch_of(start, min(start + size, count)).to(device)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    out.append(self.net.backbone_features(x).to("cpu", TOKEN_DTYPE))
        self.net.train(was_training)
        tokens = torch.cat(out)
        self.cache.put(key, tokens)
        return tokens

    def training_tokens(self, prepared: PreparedCase, flipped: bool = False) -> torch.Tensor:
        """Tokens of a prepared case's slices exactly as ``make_batch`` feeds them without
        augmentation (``flipped``: of the left-right mirrored slices)."""
        key = content_key(
            "train", prepared.images, prepared.stats.__dict__, self.settings, self.backbone, flipped
        )

        def batch_of(a: int, b: int) -> torch.Tensor:
            unit = prepared.inputs(a, b, self.transform)
            return self.transform.standardize(unit.flip(-1) if flipped else unit, prepared.stats)

        return self._tokens(key, prepared.images.shape[0], batch_of)

    def volume_tokens(self, case) -> torch.Tensor:
        """Tokens of a whole case as the Predictor prepares it (for validation)."""
        prepared = self.predictor.prepare(case.image, case.meta)
        key = content_key("volume", case.image, prepared.axes[0], self.settings, self.backbone)
        return self._tokens(
            key,
            prepared.slices[0].shape[0],
            lambda a, b: self.predictor.inputs(prepared, 0, a, b),
        )


class TokenBatches:
    """Batches of cached tokens of the training slices (each mirrored with probability 1/2
    when ``flips``: the mirrored slice's own tokens, with the mirrored mask), and validation
    on the validation volumes' cached tokens through the Predictor."""

    def __init__(
        self,
        predictor,
        train_cases,
        val_cases,
        *,
        cache,
        flips,
        generator,
        sampling: dict,
        progress=None,
        stop=None,
    ):
        store = TokenStore(predictor, cache, stop)
        transform = store.transform
        self.prepared = [PreparedCase.of(c, transform) for c in train_cases]
        self.sampler = SliceSampler(self.prepared, **sampling)
        work = [lambda p=p: store.training_tokens(p) for p in self.prepared]
        if flips:
            work += [lambda p=p: store.training_tokens(p, flipped=True) for p in self.prepared]
        work += [lambda c=c: store.volume_tokens(c) for c in val_cases]
        results = []
        for done, compute in enumerate(work, start=1):
            results.append(compute())
            if progress:
                progress(FeaturesComputed(done=done, total=len(work)))
        n = len(self.prepared)
        self.tokens, self.flipped = results[:n], results[n : 2 * n] if flips else None
        self.val_tokens = dict(
            zip((c.name for c in val_cases), results[len(results) - len(val_cases) :])
        )
        self.module = CachedDecoder(store.net, transform.size)
        self.generator, self.picks = generator, []

    def __len__(self) -> int:
        return len(self.sampler)

    def new_epoch(self, rng, count: int) -> None:
        self.picks = self.sampler.epoch(rng, count)

    def batch(self, offset: int, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        picks = self.picks[offset : offset + size]
        mirror = [False] * len(picks)
        if self.flipped:
            mirror = (torch.rand(len(picks), generator=self.generator) < 0.5).tolist()
        x = torch.stack(
            [(self.flipped if m else self.tokens)[c][s] for (c, s), m in zip(picks, mirror)]
        )
        masks = [self.prepared[c].masks[s] for c, s in picks]
        y = torch.stack([mask.flip(-1) if m else mask for mask, m in zip(masks, mirror)])
        return [x.float()], [y.float()]

    def logits_source(self, predictor: Predictor, case):
        """The Predictor's ``logits_of`` for a validation case: the decoder on its tokens."""
        tokens, decoder = self.val_tokens[case.name], self.module
        device, dtype = predictor.device, predictor.dtype

        def logits_of(branch: int, first: int, stop: int) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return decoder(tokens[first:stop].to(device).float())

        return logits_of
