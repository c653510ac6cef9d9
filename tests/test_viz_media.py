"""Tests for vidxai.viz.media: GIF/MP4 writing, overlay videos and figure rendering."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageSequence

from vidxai.viz import media
from vidxai.viz.media import figure_to_array, overlay_video, save_figure, write_gif, write_mp4


def _distinct_frames(t: int, h: int = 32, w: int = 32) -> np.ndarray:
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, :, : (i + 1) * w // (t + 1)] = (40 * i % 256, 255 - 30 * i % 256, 128)
    return frames


def test_write_gif_has_all_frames(tmp_path):
    frames = _distinct_frames(5)
    path = write_gif(tmp_path / "sub" / "clip.gif", frames, fps=5)
    with Image.open(path) as img:
        assert img.format == "GIF"
        n = sum(1 for _ in ImageSequence.Iterator(img))
        assert n == 5
        assert img.info.get("loop") == 0
        assert img.info.get("duration") == 200


@pytest.mark.parametrize("size", [(32, 32), (33, 31)])  # odd sizes are padded to even
def test_write_mp4_readable_with_all_frames(tmp_path, size):
    frames = _distinct_frames(6, *size)
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=4)
    assert path is not None and path.stat().st_size > 0
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6
    assert decoded[0].shape[:2] == (size[0] + size[0] % 2, size[1] + size[1] % 2)


def test_write_mp4_without_encoder_returns_none(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(media, "MP4_CODECS", ("no_such_codec_xyz",))
    with caplog.at_level(logging.WARNING, logger="vidxai.viz.media"):
        assert write_mp4(tmp_path / "clip.mp4", _distinct_frames(2)) is None
    assert "no usable MP4 encoder" in caplog.text
    assert not (tmp_path / "clip.mp4").exists()


def test_overlay_video_upscales_labels_and_colorbar():
    frames = np.full((3, 32, 32, 3), 100, dtype=np.uint8)
    pixel = np.zeros((3, 32, 32))
    pixel[:, 10:20, 10:20] = 1.0
    out = overlay_video(frames, pixel, frame_indices=[4, 8, 12])
    assert out.dtype == np.uint8 and out.shape[0] == 3
    assert out.shape[2] == 32 * 7  # ceil(224 / 32) = 7, nearest-neighbour upscale
    assert out.shape[1] > out.shape[2]  # colour-bar strip added below
    centre = out[0, 15 * 7, 15 * 7].astype(int)
    assert centre[0] > centre[2] + 40  # relevance drawn red
    label_area = out[0, :24, :60]
    assert (label_area > 200).any() and (label_area < 50).any()  # white text with black outline
    plain = overlay_video(frames, pixel, colorbar=False, min_size=16)
    assert plain.shape == (3, 32, 32, 3)


def test_figure_to_array_and_save(tmp_path):
    fig = Figure(figsize=(2, 1), dpi=50)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    arr = figure_to_array(fig)
    assert arr.shape == (50, 100, 3) and arr.dtype == np.uint8
    assert arr.min() < 255  # something was drawn
    path = save_figure(fig, tmp_path / "a" / "fig.png", dpi=50)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (100, 50)


def test_media_errors(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        write_gif(tmp_path / "x.gif", _distinct_frames(2), fps=0)
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", _distinct_frames(2).astype(float))
