"""Map-style dataset of uint8 clips decoded on the fly.

Decoders are opened inside ``__getitem__`` (so inside the DataLoader worker that needs
them) and closed right after: nothing is shared across processes.

Training randomness is a pure function of ``(seed, epoch, index)``: :class:`EpochSampler` shuffles
from ``(seed, epoch)`` and yields ``(index, epoch)`` keys, and the dataset draws a clip's frames from
``(seed, epoch, index)``. Nothing stateful (worker RNGs, persistent workers, a resumed run) changes
which clips an epoch sees, so a run resumed from a checkpoint sees exactly the data of an
uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from vidxai.data.decoders import VideoDecodeError, open_video, resolve_backend
from vidxai.data.manifest import VideoEntry
from vidxai.data.sampling import jittered_segment_indices, multi_clip_indices, uniform_indices
from vidxai.errors import ConfigError

log = logging.getLogger(__name__)

ON_BAD_VIDEO = ("skip", "raise")


def check_on_bad_video(value: str) -> str:
    """Validate the ``on_bad_video`` policy."""
    if value not in ON_BAD_VIDEO:
        raise ConfigError(f"data.on_bad_video={value!r} is unknown: use 'skip' or 'raise'")
    return value


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn`` of the DataModule's loaders: seeds numpy's, ``random``'s and torch's global state from
    the worker's torch seed and the process rank, as Lightning's ``seed_everything(workers=True)`` would (training
    randomness itself is :func:`sample_rng`; this covers library code that draws from the global state).

    Lightning adds its own function only to loaders that have none; its function lives in ``lightning_fabric``,
    and unpickling it made every spawned worker import Lightning, torchmetrics and what they pull in (about 5 s of
    CPU per worker on 2 cores, against 1.5 s for torch and this package). This one imports nothing new."""
    import random

    state = np.random.SeedSequence([torch.initial_seed(), int(worker_id), int(rank)]).generate_state(2, np.uint64)
    np.random.seed(int(state[0]) & 0xFFFFFFFF)
    random.seed(int(state[0]))
    torch.manual_seed(int(state[1]))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training sample: a pure function of ``(seed, epoch, index)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


class EpochSampler(DistributedSampler):
    """Shuffled training order from ``(seed, epoch)`` only; yields ``(index, epoch)`` keys.

    A ``DistributedSampler`` (one replica unless told otherwise), so Lightning keeps it under DDP and
    each rank gets its shard. ``epoch_fn`` (e.g. the trainer's current epoch) is read when an epoch's
    iteration starts, so the order is right even when the loader is iterated before ``set_epoch``
    (Lightning does that for the first epoch of a resumed run).
    """

    def __init__(self, dataset: Any, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 epoch_fn: Callable[[], int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed),
                         drop_last=False)
        self.epoch_fn = epoch_fn

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        if self.epoch_fn is not None:
            self.epoch = int(self.epoch_fn())
        epoch = self.epoch
        for index in super().__iter__():
            yield int(index), epoch


class VideoClipDataset(Dataset):
    """Clips of ``num_frames`` frames from scanned videos, as uint8 ``(T, 3, H, W)`` tensors.

    Training clips use jittered segment sampling; with ``(index, epoch)`` keys (from
    :class:`EpochSampler`) its randomness is :func:`sample_rng` of ``(seed, epoch, index)``, with a
    plain ``index`` it is fresh randomness from torch's RNG. Evaluation clips are uniform, or
    ``clips_per_video`` evenly offset uniform clips stacked as ``(K, T, 3, H, W)``.
    A video that fails to decode is replaced by the next decodable one (``on_bad_video="skip"``,
    with a warning) or raises :class:`VideoDecodeError` (``"raise"``).
    """

    def __init__(self, entries: Sequence[VideoEntry], num_frames: int, size: Sequence[int] | None,
                 train: bool, clips_per_video: int = 1, backend: str = "auto", seed: int = 0,
                 on_bad_video: str = "skip", device: str = "cpu") -> None:
        if num_frames < 1:
            raise ConfigError(f"data.num_frames must be >= 1, got {num_frames}")
        if clips_per_video < 1:
            raise ConfigError(f"data.test_clips must be >= 1, got {clips_per_video}")
        self.entries = list(entries)
        self.num_frames = int(num_frames)
        self.size = tuple(int(s) for s in size) if size is not None else None
        self.train = bool(train)
        self.clips_per_video = int(clips_per_video)
        self.backend = resolve_backend(backend, device)
        self.device = device
        self.seed = int(seed)
        self.on_bad_video = check_on_bad_video(on_bad_video)
        self._failed: set[int] = set()  # per process: indices that failed to decode here

    def __len__(self) -> int:
        return len(self.entries)

    def frame_indices(self, index: int, generator: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices of the clip(s) for ``index``: ``(T,)`` or ``(K, T)`` for K > 1."""
        n_video = self.entries[index].num_frames
        if self.train:
            if generator is None:
                generator = np.random.default_rng([self.seed, int(torch.randint(0, 2**62, (1,)).item())])
            return jittered_segment_indices(n_video, self.num_frames, generator)
        if self.clips_per_video > 1:
            return multi_clip_indices(n_video, self.num_frames, self.clips_per_video)
        return uniform_indices(n_video, self.num_frames)

    def load(self, index: int, generator: np.random.Generator | None = None) -> dict[str, Any]:
        """Decode the sample at ``index``; raises :class:`VideoDecodeError` on failure."""
        entry = self.entries[index]
        idx = self.frame_indices(index, generator)
        flat = idx.reshape(-1)
        with open_video(entry.record.path, backend=self.backend, size=self.size, device=self.device) as dec:
            frames = dec.get_frames(flat)
        if frames.shape[0] != flat.size:
            raise VideoDecodeError(f"{entry.record.path}: got {frames.shape[0]} frames, expected {flat.size}")
        # (N,3,H,W) uint8 as a view of the decoder's (N,H,W,3) memory: no copy here; collation keeps that layout
        # and VideoTransform reads it in its single conversion pass
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        video = video.reshape(*idx.shape, *video.shape[1:])
        return {"video": video, "label": torch.tensor(entry.record.label, dtype=torch.int64),
                "index": torch.tensor(index, dtype=torch.int64),
                "frame_indices": torch.from_numpy(idx.astype(np.int64))}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), None)
        n = len(self.entries)
        for step in range(n):
            candidate = (index + step) % n  # deterministic replacement: the next decodable video
            if candidate in self._failed:
                continue
            rng = sample_rng(self.seed, epoch, candidate) if epoch is not None and self.train else None
            try:
                return self.load(candidate, rng)
            except (VideoDecodeError, OSError) as exc:
                if self.on_bad_video == "raise":
                    if isinstance(exc, VideoDecodeError):
                        raise
                    raise VideoDecodeError(f"{self.entries[candidate].record.path}: {exc}") from exc
                self._failed.add(candidate)
                log.warning("skipping undecodable video %s (%s); using the next one instead",
                            self.entries[candidate].record.path, exc)
        raise VideoDecodeError(f"none of the {n} videos could be decoded (first: "
                               f"{self.entries[index].record.path}): check the files and data.backend")
