"""Tests for vidxai.viz.curves: per-frame scores, peak finding and the relevance-curve figure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidxai.viz.curves import find_peaks, frame_scores, relevance_curve_figure


def test_frame_scores_match_hand_computation():
    pixel = np.array(
        [
            [[1.0, -2.0], [3.0, 0.0]],  # mean_pos (1 + 3) / 4, max 3, sum 2
            [[-1.0, -1.0], [-1.0, -5.0]],  # mean_pos 0, max -1, sum -8
        ]
    )
    s = frame_scores(pixel)
    np.testing.assert_allclose(s["mean_pos"], [1.0, 0.0])
    np.testing.assert_allclose(s["max"], [3.0, -1.0])
    np.testing.assert_allclose(s["sum"], [2.0, -8.0])


@pytest.mark.parametrize(
    ("scores", "k", "min_distance", "expected"),
    [
        ([0, 3, 1, 5, 2, 4], 3, 1, [1, 3, 5]),  # interior maxima and the last frame (edge)
        ([0, 3, 1, 5, 2, 4], 2, 1, [3, 5]),  # top-2 by value, returned in frame order
        ([1, 2, 3, 4], 3, 1, [3]),  # monotonic: only the end is a local max; k > #peaks
        ([5], 3, 1, [0]),  # single frame, k larger than T
        ([2, 2, 2, 2, 2], 3, 1, [2]),  # constant sequence = one plateau, its middle
        ([0, 4, 4, 0, 4, 4, 4, 0], 3, 1, [1, 5]),  # plateaus: left middle of even, middle of odd
        ([0, 3, 0, 3, 0, 3, 0], 2, 1, [1, 3]),  # ties broken by earlier frame
        ([0, 9, 0, 8, 0, 1, 0], 2, 3, [1, 5]),  # min_distance suppresses the close second peak
        ([1, 3, 3, 2, 3], 3, 1, [1, 4]),  # plateau (1, 2) is a peak; the dip 3 is not
    ],
)
def test_find_peaks_hand_made(scores, k, min_distance, expected):
    assert find_peaks(scores, k=k, min_distance=min_distance) == expected


def test_find_peaks_errors():
    with pytest.raises(ValueError, match="k must be"):
        find_peaks([1, 2], k=0)
    with pytest.raises(ValueError, match="NaN"):
        find_peaks([1, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        find_peaks(np.zeros((2, 2)))


def test_relevance_curve_figure(tmp_path):
    t = 12
    pixel = np.zeros((t, 8, 8))
    bumps = {3: 1.0, 7: 3.0, 11: 2.0}  # mean_pos peaks at clip positions 3, 7 and 11
    for i, v in bumps.items():
        pixel[i, :4] = v
    pixel[5, 0, 0] = 0.1
    frame_indices = np.arange(t) * 6
    fig, peaks = relevance_curve_figure(pixel, frame_indices=frame_indices, k=3, title="test")
    assert peaks == [3, 7, 11]
    ax, ax2 = fig.axes[:2]
    # the blue curve is the mean positive relevance, the red one the max, x in source frame index
    blue, red = ax.get_lines()[0], ax2.get_lines()[0]
    np.testing.assert_allclose(blue.get_xdata(), frame_indices)
    np.testing.assert_allclose(blue.get_ydata(), frame_scores(pixel)["mean_pos"])
    np.testing.assert_allclose(red.get_ydata(), frame_scores(pixel)["max"])
    assert "mean positive" in ax.get_ylabel() and "max" in ax2.get_ylabel()
    texts = {t.get_text() for t in ax.texts}
    assert {"#18", "#42", "#66"} <= texts
    fig.savefig(tmp_path / "curve.png", dpi=50)
    with Image.open(tmp_path / "curve.png") as img:
        assert img.format == "PNG" and img.mode in ("RGB", "RGBA") and img.width > 0


def test_relevance_curve_seconds_and_single_frame():
    pixel = np.random.default_rng(0).normal(size=(5, 4, 4))
    fig, peaks = relevance_curve_figure(pixel, timestamps=np.arange(5) * 0.5)
    assert fig.axes[0].get_xlabel() == "time (s)"
    assert 1 <= len(peaks) <= 3
    fig, peaks = relevance_curve_figure(pixel[:1])
    assert peaks == [0]


def test_find_peaks_min_height_drops_negligible_maxima() -> None:
    scores = [0.001, 0.0, 0.5, 0.4, 1.0]
    assert find_peaks(scores, k=3) == [0, 2, 4]
    assert find_peaks(scores, k=3, min_height=0.1) == [2, 4]
    assert find_peaks([0.0, 0.0, 0.0], k=2, min_height=0.5) == [1]  # nothing positive: plateau kept
    with pytest.raises(ValueError, match="min_height"):
        find_peaks(scores, min_height=2.0)
