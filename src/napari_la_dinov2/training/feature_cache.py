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
decoder can resolve). Validation reuses the cache too: the validation volumes' tokens are
computed from the Predictor's own prepared inputs, and fed back to the Predictor's second level
in place of the network (:class:`TokenBatches`), so the resize back, threshold and
post-processing are the Predictor's.
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

from ..volume_files import atomic_write

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
