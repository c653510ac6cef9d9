"""vidxai.data.clips: a clip from a file, made ready for the model, shown as the model saw it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import corrupt, make_video

from vidxai.data import VideoDecodeError, VideoTransform, denormalize, prepare_clip, read_clip, uniform_indices


def test_read_clip_spreads_frames_over_the_file(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.avi", num_frames=8)
    video, idx, fps = read_clip(path, 4, size=(16, 16))
    assert video.dtype == torch.uint8 and tuple(video.shape) == (4, 3, 16, 16)
    assert idx.tolist() == uniform_indices(8, 4).tolist() == [1, 3, 5, 7]
    assert fps == pytest.approx(8.0)
    means = video.float().mean(dim=(1, 2, 3)).tolist()
    assert means == sorted(means)  # frame t is brighter than frame t-1 in make_video
    short, short_idx, _ = read_clip(path, 12)  # short videos repeat frames
    assert short.shape[0] == 12 and len(set(short_idx.tolist())) == 8


def test_read_clip_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="video not found"):
        read_clip(tmp_path / "missing.avi", 4)
    bad = tmp_path / "bad.avi"
    corrupt(bad)
    with pytest.raises(VideoDecodeError):
        read_clip(bad, 4)


def test_prepare_clip_shows_what_the_model_saw() -> None:
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (2, 3, 3, 12, 12), generator=g, dtype=torch.uint8)  # K=2 clips of 3 frames
    indices = torch.tensor([[0, 4, 8], [1, 5, 9]])
    transform = VideoTransform(mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], crop_size=8)
    x, shown, idx = prepare_clip(video, indices, transform, "cpu")
    assert tuple(x.shape) == (3, 3, 8, 8) and idx == [0, 4, 8]  # the first clip
    assert shown.dtype == np.uint8 and shown.shape == (3, 8, 8, 3)
    centre = video[0, :, :, 2:10, 2:10].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(shown, centre)  # centre crop, de-normalised back to the input bytes
    np.testing.assert_array_equal(denormalize(x, transform.mean, transform.std), shown)
