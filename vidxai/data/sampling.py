"""Clip samplers: which frame indices of a video make a clip.

All samplers return sorted ``int64`` arrays of length ``n_clip`` (or ``(k, n_clip)``) with
values in ``[0, n_video - 1]``. Videos shorter than the clip repeat frames (sorted, nearest).
"""

from __future__ import annotations

import numpy as np


def _check(n_video: int, n_clip: int) -> None:
    if n_video < 1:
        raise ValueError(f"a video needs at least one frame to sample from, got n_video={n_video}")
    if n_clip < 1:
        raise ValueError(f"data.num_frames must be >= 1, got {n_clip}")


def uniform_indices(n_video: int, n_clip: int, offset: float = 0.5) -> np.ndarray:
    """Evenly spaced frames: the point at ``offset`` (0..1) inside each of ``n_clip`` equal segments.

    ``offset=0.5`` takes segment centres (the deterministic val/test clip).
    """
    _check(n_video, n_clip)
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    positions = (np.arange(n_clip, dtype=np.float64) + offset) * (n_video / n_clip)
    return np.clip(np.floor(positions).astype(np.int64), 0, n_video - 1)


def jittered_segment_indices(n_video: int, n_clip: int, generator: np.random.Generator) -> np.ndarray:
    """TSN-style training sampler: ``n_clip`` equal segments, one random frame in each.

    With fewer frames than segments every frame is used, repeated in order (a uniform clip
    with a random offset), as for evaluation.
    """
    _check(n_video, n_clip)
    if n_video < n_clip:
        return uniform_indices(n_video, n_clip, offset=float(generator.random()))
    edges = np.arange(n_clip + 1, dtype=np.float64) * (n_video / n_clip)
    low = np.floor(edges[:-1]).astype(np.int64)
    high = np.maximum(np.floor(edges[1:]).astype(np.int64), low + 1)  # exclusive
    picks = low + np.floor(generator.random(n_clip) * (high - low)).astype(np.int64)
    return np.sort(np.clip(picks, 0, n_video - 1))


def multi_clip_indices(n_video: int, n_clip: int, k: int) -> np.ndarray:
    """``k`` uniform clips with evenly staggered offsets, shape ``(k, n_clip)`` (test-time averaging)."""
    _check(n_video, n_clip)
    if k < 1:
        raise ValueError(f"data.test_clips must be >= 1, got {k}")
    return np.stack([uniform_indices(n_video, n_clip, offset=(j + 0.5) / k) for j in range(k)])
