"""Frozen-feature cache: each slice's DINOv2 token map is computed once, then only the decoder
trains.

With a frozen backbone the token map of a slice depends only on the slice's pixels, the backbone
weights and the input size, so it is the same in every epoch and in every fine-tuning round on
the same case. A run then computes the backbone once per case and trains ``net.decode`` alone.

Keys are content hashes: the prepared model input of the case (which already encodes the input
size, the fit and the intensity window) + the preprocessing settings + a fingerprint of the
backbone weights and config. Editing the labels of a case (a correction round) keeps its key;
changing its pixels, the backbone or the input size gives a new one, so a stale entry is never
used. Entries live in memory, bounded by bytes and evicted least-recently-used first, and
optionally on disk as safetensors files (``<key>.safetensors``) that survive the process.

Augmentation: geometric and intensity augmentations change the backbone's input, and a ViT with
absolute position embeddings is not equivariant to them, so none of them can be applied to a
cached token map exactly. In cache mode the only augmentation is the left-right flip, made exact
by caching a second token map computed from the mirrored slices (the decoder then sees the true
tokens of the mirrored slice, with the mirrored mask). It doubles the one-time backbone cost and
the cache size; ``augment=False`` turns it off. Rotations, scalings, intensity jitter and noise
are not used in cache mode; train end to end (or set ``feature_cache="off"``) to get them.

Tokens are stored as float16 (half the memory; a relative rounding of ~5e-4, far below what the
decoder can resolve). Validation reuses the cache too, with exactly the Predictor's
preprocessing and post-processing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CancelledError
from ..io import atomic_write
from ..postprocess import postprocess
from ..preprocess import IntensityStats, SliceTransform, slice_transforms, view_axis

DEFAULT_MEMORY_BYTES = 4 << 30  # 4 GiB: 56 LA cases of ViT-S/14 tokens at 448 (69 MB each)
TOKEN_DTYPE = torch.float16


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def backbone_fingerprint(net: nn.Module) -> str:
    """Hash of the backbone's config and every weight: two backbones with the same fingerprint
    give the same tokens. Costs one pass over the weights (about 0.1 s for ViT-S/14)."""
    backbone = net.backbone
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(backbone, "config", None)
    if config is not None:
        settings = config.to_dict()
        for key in (
            "transformers_version",
            "_name_or_path",
            "architectures",
            "torch_dtype",
            "dtype",
        ):
            settings.pop(key, None)
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def content_key(*parts) -> str:
    """Hash of tensors, arrays and JSON-able settings, in order."""
    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        if torch.is_tensor(part):
            digest.update(f"t{part.dtype}{tuple(part.shape)}".encode())
            digest.update(_tensor_bytes(part))
        elif isinstance(part, np.ndarray):
            digest.update(f"a{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class FeatureCache:
    """Token maps by key: an LRU in memory bounded by ``max_bytes``, and optionally a folder of
    safetensors files (bounded by ``max_disk_bytes`` when given, oldest files removed first).
    Thread-safe: the napari widgets train in a worker thread."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MEMORY_BYTES,
        directory: str | os.PathLike | None = None,
        max_disk_bytes: int | None = None,
    ):
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory).expanduser() if directory else None
        self.max_disk_bytes = max_disk_bytes
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.disk_hits = self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def bytes_in_memory(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries or (self._path(key) is not None and self._path(key).is_file())

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.safetensors" if self.directory is not None else None

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return tensor
        path = self._path(key)
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            try:
                tensor = load_file(str(path))["tokens"]
            except Exception:  # a truncated or foreign file: recompute rather than fail
                tensor = None
            if tensor is not None:
                os.utime(path)  # recently used: the disk bound removes it last
                with self._lock:
                    self.disk_hits += 1
                self._remember(key, tensor)
                return tensor
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cpu", TOKEN_DTYPE).contiguous()
        self._remember(key, tensor)
        path = self._path(key)
        if path is not None and not path.is_file():
            from safetensors.torch import save_file

            atomic_write(path, lambda tmp: save_file({"tokens": tensor}, str(tmp)))
            self._prune_disk()

    def _remember(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            if size > self.max_bytes:
                return  # larger than the whole budget: disk only (if any)
            while self._entries and self._bytes + size > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
            self._entries[key] = tensor
            self._bytes += size

    def resize(self, max_bytes: int) -> None:
        """A new memory budget; the least recently used entries go until it holds."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            while self._entries and self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()

    def _prune_disk(self) -> None:
        if self.max_disk_bytes is None or self.directory is None:
            return
        # Hidden names are other writers' files in progress (atomic_write's temporaries).
        files = [p for p in self.directory.glob("*.safetensors") if not p.name.startswith(".")]
        files.sort(key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files[:-1]:  # never the newest one
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_shared: FeatureCache | None = None
_shared_lock = threading.Lock()


def shared_cache(
    max_bytes: int = DEFAULT_MEMORY_BYTES, directory: str | os.PathLike | None = None
) -> FeatureCache:
    """The process-wide cache, so that successive fine-tuning rounds (the napari widget, the
    few-shot runs) reuse each other's token maps. A new budget resizes it; another folder
    replaces it."""
    global _shared
    folder = Path(directory).expanduser() if directory else None
    with _shared_lock:
        if _shared is None or _shared.directory != folder:
            _shared = FeatureCache(max_bytes, folder)
        elif _shared.max_bytes != int(max_bytes):
            _shared.resize(max_bytes)
    return _shared


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
    """Computes (once) and looks up the token maps of the cases of one run."""

    def __init__(
        self,
        net: nn.Module,
        transform: SliceTransform,
        preprocessing: dict,
        device: torch.device,
        cache: FeatureCache,
        *,
        batch_size: int = 16,
        amp_dtype: torch.dtype | None = None,
        stop=None,
    ):
        self.net, self.transform, self.device, self.cache = net, transform, device, cache
        self.batch_size, self.amp_dtype, self.stop = batch_size, amp_dtype, stop
        self.settings = {k: preprocessing[k] for k in sorted(preprocessing)}
        self.backbone = backbone_fingerprint(net)

    def _tokens(self, key: str, count: int, batch_of) -> torch.Tensor:
        """``SxCxhxw`` float16 tokens: from the cache, else computed ``batch_size`` at a time."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        out = []
        was_training = self.net.training
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, count, self.batch_size):
                if self.stop is not None and (
                    self.stop.is_set() if isinstance(self.stop, threading.Event) else self.stop()
                ):
                    raise CancelledError("stopped while computing the backbone features")
                x = batch_of(start, min(start + self.batch_size, count)).to(self.device)
                with torch.autocast(
                    self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                ):
                    out.append(self.net.backbone_features(x).to("cpu", TOKEN_DTYPE))
        self.net.train(was_training)
        tokens = torch.cat(out)
        self.cache.put(key, tokens)
        return tokens

    def training_tokens(self, prepared, flipped: bool = False) -> torch.Tensor:
        """Tokens of a :class:`~.slices.PreparedCase`'s slices exactly as ``make_batch`` feeds
        them without augmentation (``flipped``: of the left-right mirrored slices)."""
        key = content_key(
            "train", prepared.images, prepared.stats.__dict__, self.settings, self.backbone, flipped
        )

        def batch_of(a: int, b: int) -> torch.Tensor:
            unit = prepared.inputs(a, b, self.transform)
            if flipped:
                unit = unit.flip(-1)
            return self.transform.standardize(unit, prepared.stats)

        return self._tokens(key, prepared.images.shape[0], batch_of)

    def tokens_for_run(
        self, prepared: list, val_cases: list, flips: bool, progress=None, view="through-plane"
    ):
        """Every token map a run needs, computed now (or found in the cache): the training
        slices, their mirrored versions when ``flips``, and the validation volumes (cut along
        ``view``, like ``prepared``).
        ``progress`` receives ``{"kind": "features", "done", "total"}``."""
        work = [lambda p=p: self.training_tokens(p) for p in prepared]
        if flips:
            work += [lambda p=p: self.training_tokens(p, flipped=True) for p in prepared]
        work += [lambda c=c: self.volume_tokens(c, view) for c in val_cases]
        results = []
        for done, compute in enumerate(work, start=1):
            results.append(compute())
            if progress:
                progress({"kind": "features", "done": done, "total": len(work)})
        n = len(prepared)
        flipped = results[n : 2 * n] if flips else None
        return results[:n], flipped, results[len(results) - len(val_cases) :]

    def volume_tokens(self, case, view: str = "through-plane") -> tuple[torch.Tensor, int]:
        """Tokens of a whole case prepared exactly as :class:`~..inference.Predictor` does
        (for validation), and the axis they were cut along (``view``'s)."""
        axis = view_axis(case.meta.through_plane_axis(), view)
        region = np.moveaxis(case.image, axis, 0)
        stats = IntensityStats.of(region)
        key = content_key("volume", case.image, axis, self.settings, self.backbone)

        def batch_of(a: int, b: int) -> torch.Tensor:
            return self.transform.prepare(self.transform.gather(region, a, b), stats)

        return self._tokens(key, region.shape[0], batch_of), axis


def token_batch(
    tokens: list[torch.Tensor],
    flipped: list[torch.Tensor] | None,
    prepared,
    picks: list[tuple[int, int]],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached ``BxCxhxw`` tokens (float32) and ``Bx1xSxS`` masks of the picked slices; with
    ``flipped``, each slice is mirrored with probability 1/2 (tokens of the mirrored slice,
    mirrored mask)."""
    if flipped:
        mirror = (torch.rand(len(picks), generator=generator) < 0.5).tolist()
    else:
        mirror = [False] * len(picks)
    x = torch.stack([(flipped if m else tokens)[c][s] for (c, s), m in zip(picks, mirror)])
    y = torch.stack(
        [
            prepared[c].masks[s].flip(-1) if m else prepared[c].masks[s]
            for (c, s), m in zip(picks, mirror)
        ]
    )
    return x.float(), y.float()


def validate_cached(
    model,
    cases,
    tokens: list[tuple[torch.Tensor, int]],
    device,
    batch_size: int = 16,
    amp_dtype: torch.dtype | None = None,
    threshold: float = 0.5,
    stop=None,
) -> float:
    """Mean 3D Dice over whole volumes from cached tokens; the same resize back, threshold and
    post-processing as :class:`~..inference.Predictor` with its defaults."""
    from ..metrics import dice

    transform = slice_transforms(model.preprocessing)[0]  # a frozen backbone: one view
    size = (transform.size, transform.size)
    scores = []
    model.eval()
    with torch.inference_mode():
        for case, (case_tokens, axis) in zip(cases, tokens):
            height, width = np.moveaxis(case.image, axis, 0).shape[1:]
            probs = []
            for start in range(0, case_tokens.shape[0], batch_size):
                if stop is not None and (
                    stop.is_set() if isinstance(stop, threading.Event) else stop()
                ):
                    raise CancelledError("stopped during validation")
                x = case_tokens[start : start + batch_size].to(device).float()
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model.net.decode(x, size)
                probs.append(torch.sigmoid(transform.restore(logits.float(), height, width)).cpu())
            mask = np.moveaxis(torch.cat(probs).numpy(), 0, axis) > threshold
            # Cleaned in the acquisition's plane, whatever the view, as the Predictor does.
            scores.append(dice(postprocess(mask, case.meta.through_plane_axis()), case.labels))
    model.train()
    return float(np.mean(scores))
