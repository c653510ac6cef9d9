"""VideoTransform: per-clip crop/flip in training, deterministic eval, exact normalisation."""

from __future__ import annotations

import pytest
import torch

from vidxai.data.transforms import VideoTransform


def ramp_clips(b: int = 6, t: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    """uint8 clips whose pixel value encodes its column (x * 10), identical over frames and channels."""
    x = (torch.arange(w) * 10).to(torch.uint8)
    return x.view(1, 1, 1, 1, w).expand(b, t, 3, h, w).clone()


def test_normalisation_is_exact() -> None:
    video = torch.randint(0, 256, (2, 3, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = VideoTransform(mean, std, crop_size=None, flip=False)(video, train=False)
    shape = (1, 1, 3, 1, 1)
    expected = (video.float() / 255 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_eval_centre_crop_is_deterministic() -> None:
    tf = VideoTransform((0, 0, 0), (1, 1, 1), crop_size=4, flip=True)
    video = ramp_clips()
    a, b = tf(video, train=False), tf(video, train=False)
    assert a.shape == (6, 3, 3, 4, 4)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0, 0, 0, 0] * 255, torch.tensor([20.0, 30, 40, 50]))  # columns 2..5, no flip


def test_train_crop_and_flip_are_per_clip_and_same_over_frames() -> None:
    tf = VideoTransform((0, 0, 0), (1, 1, 1), crop_size=(8, 4), flip=True)
    out = tf(ramp_clips(b=64), train=True, generator=torch.Generator().manual_seed(0)) * 255
    rows = out[:, :, 0, 0, :]  # (B, T, 4): first row of every frame
    assert torch.equal(rows, rows[:, :1].expand_as(rows))  # same crop and flip over the frames of a clip
    first = rows[:, 0]
    flipped = first[:, 0] > first[:, -1]
    assert 0 < int(flipped.sum()) < 64  # some clips flipped, some not
    assert len({round(float(v)) for v in first.min(dim=1).values}) > 2  # several crop offsets drawn
    same = tf(ramp_clips(b=64), train=True, generator=torch.Generator().manual_seed(0)) * 255
    torch.testing.assert_close(out, same)  # reproducible with a seeded generator


def test_multi_clip_input_and_preprocess_round_trip() -> None:
    tf = VideoTransform((0.4, 0.5, 0.6), (0.2, 0.2, 0.2), crop_size=4, flip=False)
    video = torch.randint(0, 256, (2, 5, 3, 3, 6, 6), dtype=torch.uint8)  # (B, K, T, 3, H, W)
    out = tf(video, train=False)
    assert out.shape == (2, 5, 3, 3, 4, 4)
    torch.testing.assert_close(out[1, 4], tf(video[1, 4][None], train=False)[0])
    again = VideoTransform.from_preprocess({**tf.preprocess, "num_frames": 3, "size": [6, 6]})
    assert again.preprocess == tf.preprocess
    torch.testing.assert_close(again(video, train=False), out)


def test_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="crop_size=.*larger than the decoded frames"):
        VideoTransform(crop_size=16)(torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mean and data.std need 3 values"):
        VideoTransform(mean=(0.5,), std=(1, 1, 1))
    with pytest.raises(ValueError, match=r"expects \(B,T,3,H,W\)"):
        VideoTransform()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
