"""Clip samplers: uniform, jittered segments (TSN), K clips, short videos."""

from __future__ import annotations

import numpy as np
import pytest

from vidxai.data.sampling import jittered_segment_indices, multi_clip_indices, uniform_indices


def test_uniform_takes_segment_centres() -> None:
    np.testing.assert_array_equal(uniform_indices(16, 8), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(uniform_indices(8, 8), np.arange(8))  # n_video == n_clip
    assert uniform_indices(100, 4).dtype == np.int64


def test_short_videos_repeat_frames_sorted_nearest() -> None:
    np.testing.assert_array_equal(uniform_indices(3, 8), [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(uniform_indices(1, 5), np.zeros(5))  # 1-frame video
    gen = np.random.default_rng(0)
    for n_video in (1, 3, 7):
        idx = jittered_segment_indices(n_video, 8, gen)
        assert len(idx) == 8 and np.all(np.diff(idx) >= 0) and idx.max() < n_video
        assert set(idx.tolist()) == set(range(n_video))  # every frame used, none skipped


def test_jitter_stays_in_its_segment_and_varies() -> None:
    gen = np.random.default_rng(0)
    draws = np.stack([jittered_segment_indices(32, 8, gen) for _ in range(200)])
    seg = np.arange(8) * 4
    assert np.all(draws >= seg) and np.all(draws < seg + 4)
    assert all(len(set(draws[:, j])) == 4 for j in range(8))  # every frame of each segment is drawn
    np.testing.assert_array_equal(jittered_segment_indices(8, 8, gen), np.arange(8))


def test_multi_clip_offsets() -> None:
    clips = multi_clip_indices(32, 4, 3)
    assert clips.shape == (3, 4) and clips.dtype == np.int64
    assert len({tuple(c) for c in clips}) == 3  # distinct, evenly staggered clips
    assert np.all(np.diff(clips, axis=0) >= 0)
    np.testing.assert_array_equal(multi_clip_indices(32, 4, 1)[0], uniform_indices(32, 4))
    assert multi_clip_indices(1, 4, 2).max() == 0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n_video=0"):
        uniform_indices(0, 4)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        uniform_indices(4, 0)
    with pytest.raises(ValueError, match="test_clips must be >= 1"):
        multi_clip_indices(4, 4, 0)
