"""Tests for vidxai.viz.heatmaps: colour mapping, overlays and heatmap figures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidxai.viz.heatmaps import (
    heatmap_grid,
    overlay,
    peaks_figure,
    relevance_to_rgba,
    rule_comparison_figure,
    symmetric_limits,
)


def _clip(t: int = 4, h: int = 32, w: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)
    pixel = rng.normal(size=(t, h, w))
    return frames, pixel


def _assert_png(fig, path) -> Image.Image:
    fig.savefig(path, dpi=50)
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        assert img.mode in ("RGB", "RGBA")
        assert img.width > 0 and img.height > 0
        return img.copy()


def test_colour_sign_positive_red_negative_blue_zero_neutral():
    pixel = np.zeros((3, 8, 8))
    pixel[0] = 1.0
    pixel[1] = -1.0
    rgba, vmax = relevance_to_rgba(pixel)
    red, blue = rgba[0, 0, 0], rgba[1, 0, 0]
    assert red[0] >= 0.5 and red[0] > 2 * red[2] and red[0] > 2 * red[1]
    assert blue[2] >= 0.5 and blue[2] > 2 * blue[0] and blue[2] > 2 * blue[1]
    neutral = rgba[2, 0, 0, :3]
    assert np.all(neutral > 0.95), neutral  # white
    assert vmax.shape == (3,)


def test_symmetric_limits_video_and_frame():
    pixel = np.zeros((2, 10, 10))
    pixel[0, 0, 0] = -4.0  # dominates the video-wide limit (negative sign must not matter)
    pixel[1, :, :] = 0.5
    video = symmetric_limits(pixel, scale="video", percentile=100)
    frame = symmetric_limits(pixel, scale="frame", percentile=100)
    np.testing.assert_allclose(video, [4.0, 4.0])
    np.testing.assert_allclose(frame, [4.0, 0.5])
    # the percentile is robust to a single outlier ...
    assert symmetric_limits(pixel, scale="video", percentile=90)[0] == pytest.approx(0.5)
    # ... but falls back to the max when the percentile is 0 (sparse map) and to 1 for all-zero
    assert symmetric_limits(pixel[:1], percentile=50)[0] == pytest.approx(4.0)
    assert symmetric_limits(np.zeros((1, 4, 4)))[0] == 1.0


def test_rgba_symmetry_and_per_frame_scaling():
    pixel = np.stack([np.full((4, 4), 2.0), np.full((4, 4), -2.0), np.full((4, 4), 0.1)])
    rgba, _ = relevance_to_rgba(pixel, scale="video", percentile=100)
    # +v and -v map to mirrored colours: red channel of +v equals blue channel of -v
    assert rgba[0, 0, 0, 0] == pytest.approx(rgba[1, 0, 0, 2])
    # video scale: the small frame stays pale; frame scale: it saturates like the others
    rgba_f, vmax_f = relevance_to_rgba(pixel, scale="frame", percentile=100)
    np.testing.assert_allclose(vmax_f, [2.0, 2.0, 0.1])
    assert rgba[2, 0, 0, 1] > 0.8  # pale (green channel still high)
    np.testing.assert_allclose(rgba_f[2, 0, 0], rgba_f[0, 0, 0])


def test_overlay_shape_dtype_and_colour():
    frames = np.full((2, 8, 8, 3), 128, dtype=np.uint8)
    pixel = np.zeros((2, 8, 8))
    pixel[0, :4] = 1.0
    pixel[1, :4] = -1.0
    out = overlay(frames, pixel, alpha=0.8)
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
    r, g, b = out[0, 0, 0].astype(int)
    assert r > g + 40 and r > b + 40
    r, g, b = out[1, 0, 0].astype(int)
    assert b > r + 40 and b > g + 40
    untouched = out[0, 7, 7].astype(int)  # zero relevance: plain grey
    assert untouched[0] == untouched[1] == untouched[2]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(frame_indices=[0, 5, 10, 15]),
        dict(timestamps=[0.0, 0.2, 0.4, 0.6], scale="frame", show_frames=False, title="x"),
        dict(frame_indices=[0, 5, 10, 15], timestamps=[0.0, 0.2, 0.4, 0.6], ncols=3),
    ],
)
def test_heatmap_grid_renders(tmp_path, kwargs):
    frames, pixel = _clip(4)
    fig = heatmap_grid(frames, pixel, **kwargs)
    _assert_png(fig, tmp_path / "grid.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 4
    if "frame_indices" in kwargs:
        assert titles[1].startswith("#5")
    cbar_labels = [ax.get_ylabel() for ax in fig.axes]
    expected = "relevance" if kwargs.get("scale", "video") == "video" else "relevance (each frame"
    assert any(lbl.startswith(expected) for lbl in cbar_labels)


@pytest.mark.parametrize("t", [1, 70])
def test_heatmap_grid_extreme_lengths(tmp_path, t):
    frames, pixel = _clip(t, 16, 16)
    fig = heatmap_grid(frames, pixel, frame_indices=np.arange(t) * 2)
    img = _assert_png(fig, tmp_path / f"grid{t}.png")
    images = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(images) == 2 * t  # one frame + one heatmap per sampled frame
    if t == 70:
        assert img.height > img.width / 2  # wrapped into rows, not one 70-wide strip


def test_peaks_and_rule_comparison_render(tmp_path):
    frames, pixel = _clip(6)
    fig = peaks_figure(frames, pixel, [1, 4], frame_indices=np.arange(6) * 3)
    _assert_png(fig, tmp_path / "peaks.png")
    assert sum(1 for ax in fig.axes if ax.images) == 6
    labels = [ax.get_ylabel() for ax in fig.axes if ax.images]
    assert "#3" in labels and "#12" in labels

    rels = {"epsilon": pixel, "alpha_beta": 10 * pixel}
    fig = rule_comparison_figure(frames, rels, [0, 2, 5])
    _assert_png(fig, tmp_path / "rules.png")
    row_labels = [ax.get_ylabel() for ax in fig.axes if ax.images]
    assert {"input", "epsilon", "alpha_beta"} <= set(row_labels)
    # each rule on its own scale: a 10x larger relevance gives identical colours
    eps_img = [ax for ax in fig.axes if ax.get_ylabel() == "epsilon"][0].images[0].get_array()
    ab_img = [ax for ax in fig.axes if ax.get_ylabel() == "alpha_beta"][0].images[0].get_array()
    np.testing.assert_allclose(eps_img, ab_img)


def test_clear_errors():
    frames, pixel = _clip(3)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        overlay(frames.transpose(0, 3, 1, 2), pixel)
    with pytest.raises(ValueError, match="uint8"):
        overlay(frames.astype(np.float32), pixel)
    with pytest.raises(ValueError, match="does not match"):
        overlay(frames, pixel[:, :16])
    with pytest.raises(ValueError, match="NaN"):
        relevance_to_rgba(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="scale"):
        relevance_to_rgba(pixel, scale="clip")
    with pytest.raises(ValueError, match="out of range"):
        peaks_figure(frames, pixel, [5])
    with pytest.raises(ValueError, match="frame_indices"):
        heatmap_grid(frames, pixel, frame_indices=[1, 2])
