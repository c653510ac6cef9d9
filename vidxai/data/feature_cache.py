"""Frozen-encoder feature cache: per-frame encoder features of deterministic clips, computed once, kept on disk.

With a frozen per-frame encoder (VGG16 in the paper's set-up) the encoder's output for a given clip never
changes, so it is computed once without gradients and every later epoch reads it back and runs only the
temporal part and the head. What the features depend on is hashed into the cache key:

- the encoder's weights and buffers (a hash of its ``state_dict``) and the network class,
- the clip: frames per clip, decode size, crop, normalisation, decoder backend and the sampling scheme.

Only deterministic clips can be cached (uniform sampling, centre crop, no flip): training-time jitter, random
crop and flip would make every epoch's features different. Files live under
``<cache_dir>/features/<key>/``, one ``.npy`` per clip, named by a hash of the video path, its size and
modification time, and the clip's frame indices; writes are atomic, so several processes (DDP ranks, data
loader workers) may fill the same cache.

Networks take part through one contract: ``net.encoder`` (the per-frame encoder module),
``net.features(video) -> feats`` and ``net.classify(feats) -> logits`` with
``net(video) == net.classify(net.features(video))``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vidxai.data.dataset import VideoClipDataset
from vidxai.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "CachedFeatureDataset",
    "FeatureStore",
    "check_cacheable",
    "encoder_fingerprint",
    "feature_cache_key",
    "fill_feature_cache",
    "has_frame_encoder",
]

#: Bump when the stored layout or the meaning of a key changes.
CACHE_FORMAT = 1
#: The only clip sampling the cache stores: uniform frame indices, centre crop, no flip.
CACHED_SAMPLING = "uniform-centre-crop-noflip"


def has_frame_encoder(net: nn.Module) -> bool:
    """True for networks with a per-frame encoder split: ``encoder``, ``features(x)`` and ``classify(feats)``."""
    return (isinstance(getattr(net, "encoder", None), nn.Module) and callable(getattr(net, "features", None))
            and callable(getattr(net, "classify", None)))


def check_cacheable(net: nn.Module) -> None:
    """Raise one clear :class:`UserError` unless ``net`` has a frozen per-frame encoder."""
    name = type(net).__name__
    if not has_frame_encoder(net):
        raise UserError(f"data.feature_cache=true needs a network with a per-frame encoder (features/classify), "
                        f"but {name} has none: set data.feature_cache=false")
    if any(p.requires_grad for p in net.encoder.parameters()):
        raise UserError(f"data.feature_cache=true needs a frozen encoder, but {name}'s encoder is trained: set "
                        "model.net.freeze_encoder=true (or data.feature_cache=false)")


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A hash of an encoder's weights and buffers (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def feature_cache_key(net: nn.Module, preprocess: dict[str, Any]) -> str:
    """Cache key of ``net``'s encoder applied to clips made as ``preprocess`` says (frames, size, crop, ...)."""
    fields = {
        "format": CACHE_FORMAT,
        "network": type(net).__name__,
        "encoder": encoder_fingerprint(net.encoder),
        "sampling": CACHED_SAMPLING,
        **{k: preprocess.get(k) for k in ("num_frames", "size", "crop_size", "mean", "std", "backend")},
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


class FeatureStore:
    """One cache folder ``<root>/features/<key>/``: one ``.npy`` file of features per clip."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.key = key
        self.dir = Path(root).expanduser() / "features" / key

    def path(self, video_path: str, frame_indices: np.ndarray) -> Path:
        """File of the clip ``frame_indices`` of ``video_path`` (changes when the video file changes)."""
        try:
            st = os.stat(video_path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest = hashlib.sha1(f"{video_path}|{stamp}|".encode())
        digest.update(np.asarray(frame_indices, dtype=np.int64).tobytes())
        return self.dir / f"{digest.hexdigest()[:24]}.npy"

    def load(self, video_path: str, frame_indices: np.ndarray) -> torch.Tensor | None:
        """The stored features, or ``None`` when this clip is not cached (yet)."""
        path = self.path(video_path, frame_indices)
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (FileNotFoundError, ValueError, OSError):  # missing or half-written by a killed run
            return None

    def save(self, video_path: str, frame_indices: np.ndarray, feats: torch.Tensor) -> None:
        """Store one clip's features atomically (write to a temporary file, then rename)."""
        path = self.path(video_path, frame_indices)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, feats.detach().to("cpu", torch.float32).contiguous().numpy(), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_meta(self, meta: dict[str, Any]) -> None:
        """A readable ``meta.json`` saying what the key stands for."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / "meta.json"
        if not target.exists():
            target.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))


def _check_deterministic(clips: VideoClipDataset) -> None:
    if clips.train or clips.clips_per_video != 1:
        raise ValueError("the feature cache stores deterministic single clips: pass a VideoClipDataset with "
                         "train=False and clips_per_video=1")


class CachedFeatureDataset(Dataset):
    """The samples of a deterministic clip dataset with ``"features"`` read from the store instead of ``"video"``.

    Every clip must have been cached (:func:`fill_feature_cache`); a missing one is a clear error.
    """

    def __init__(self, clips: VideoClipDataset, store: FeatureStore) -> None:
        _check_deterministic(clips)
        self.clips = clips
        self.store = store

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = int(key[0]) if isinstance(key, (tuple, list)) else int(key)  # (index, epoch) from EpochSampler
        n = len(self.clips)
        for step in range(n):
            candidate = (index + step) % n  # as VideoClipDataset: an undecodable video is replaced by the next
            idx = self.clips.frame_indices(candidate)
            feats = self.store.load(self.clips.entries[candidate].record.path, idx)
            if feats is not None:
                if step:
                    log.warning("no cached features for %s (undecodable?); using the next video instead",
                                self.clips.entries[index].record.path)
                return {"features": feats,
                        "label": torch.tensor(self.clips.entries[candidate].record.label, dtype=torch.int64),
                        "index": torch.tensor(candidate, dtype=torch.int64),
                        "frame_indices": torch.from_numpy(idx.astype(np.int64))}
        raise RuntimeError(f"feature cache {self.store.dir} holds none of the {n} clips: "
                           "fill_feature_cache must run first")


def missing_indices(clips: VideoClipDataset, store: FeatureStore) -> list[int]:
    """Indices of the clips of ``clips`` that are not in ``store`` yet."""
    return [i for i in range(len(clips))
            if not store.path(clips.entries[i].record.path, clips.frame_indices(i)).is_file()]


@torch.no_grad()
def fill_feature_cache(clips: VideoClipDataset, store: FeatureStore,
                       encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 8,
                       num_workers: int = 0, shard: tuple[int, int] = (0, 1),
                       indices: Sequence[int] | None = None, multiprocessing_context: str | None = None) -> int:
    """Compute and store the features of the clips not cached yet; returns how many were computed here.

    ``encode`` maps a uint8 clip batch ``(B, T, 3, H, W)`` to features ``(B, T, ...)`` (transform and
    encoder, on whatever device). ``shard=(rank, world_size)``: this process handles the clips whose index
    is ``rank`` modulo ``world_size`` (of ``indices``, default all). ``multiprocessing_context``: how the
    workers start (see :func:`vidxai.data.datamodule.worker_start_method`).
    """
    _check_deterministic(clips)
    rank, world = shard
    candidates = range(len(clips)) if indices is None else indices
    mine = [i for i in candidates if i % world == rank]  # by index, so every process agrees on the shares
    todo = [i for i in mine if not store.path(clips.entries[i].record.path, clips.frame_indices(i)).is_file()]
    if not todo:
        return 0
    loader = DataLoader(Subset(clips, todo), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        multiprocessing_context=multiprocessing_context if num_workers > 0 else None)
    done = 0
    for batch in loader:
        feats = encode(batch["video"])
        for i, f, idx in zip(batch["index"].tolist(), feats, batch["frame_indices"].numpy()):
            store.save(clips.entries[i].record.path, idx, f)
            done += 1
    return done
