"""Tests for vidxai.viz.profile: positive shares, the bootstrap temporal profile and its figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vidxai.viz.profile import positive_share, profile_figure, temporal_profile


def test_positive_share():
    np.testing.assert_allclose(positive_share([1.0, -2.0, 3.0, 0.0]), [0.25, 0.0, 0.75, 0.0])
    assert np.all(np.isnan(positive_share([-1.0, 0.0, -3.0])))  # undefined, not uniform
    with pytest.raises(ValueError, match="1-D"):
        positive_share(np.zeros((2, 2)))


def _last_frame_videos(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rel = np.zeros(int(rng.integers(4, 20)))
        rel[-1] = rng.uniform(0.5, 2.0)
        out.append(positive_share(rel))
    return out


def test_all_relevance_on_last_frame():
    shares = _last_frame_videos(30)
    prof = temporal_profile(shares, n_boot=200)
    s = prof["overall"]["summary"]
    assert s["last_frame"]["mean"] == pytest.approx(1.0)
    assert s["second_half"]["lo"] > 0.5 and s["second_half"]["mean"] == pytest.approx(1.0)
    assert s["first_half"]["mean"] == pytest.approx(0.0)
    assert s["second_half"]["p_sign"] < 1e-6 and s["last_frame"]["p_boot"] < 0.01
    assert s["second_half"]["uniform"] == pytest.approx(0.5)
    assert s["last_frame"]["uniform"] == pytest.approx(np.mean([1 / len(x) for x in shares]))
    # the last frame of a T >= 2 clip sits at (T - 0.5) / T >= 0.75: always in the last of 4 bins
    bins = temporal_profile(shares, n_bins=4, n_boot=10)["overall"]["bins"]
    assert bins["mean"][-1] == pytest.approx(1.0) and sum(bins["mean"][:-1]) == pytest.approx(0.0)


def test_uniform_relevance_matches_uniform_expectation():
    # exactly uniform relevance (odd and even lengths): shares equal the expectation everywhere
    shares = [positive_share(np.ones(t)) for t in (3, 5, 8, 10, 13, 20)]
    prof = temporal_profile(shares, n_bins=5, n_boot=200)
    bins, s = prof["overall"]["bins"], prof["overall"]["summary"]
    np.testing.assert_allclose(bins["mean"], bins["uniform"], atol=1e-12)
    for key in ("first_half", "second_half", "last_frame"):
        assert s[key]["lo"] - 1e-12 <= s[key]["uniform"] <= s[key]["hi"] + 1e-12
        assert s[key]["p_sign"] == 1.0  # all ties
    np.testing.assert_allclose([s["first_half"]["mean"], s["second_half"]["mean"]], [0.5, 0.5])
    # noisy relevance without a time trend (each clip also played backwards, so the sample mean
    # of each half is exactly 0.5): the bootstrap CIs of the halves cover 0.5
    rng = np.random.default_rng(1)
    noisy = [positive_share(rng.uniform(0.5, 1.5, size=int(rng.integers(5, 20)))) for _ in range(100)]
    noisy += [x[::-1] for x in noisy]
    s = temporal_profile(noisy, n_boot=500)["overall"]["summary"]
    for key in ("first_half", "second_half"):
        assert s[key]["lo"] < 0.5 < s[key]["hi"]
        assert s[key]["mean"] == pytest.approx(0.5)
        assert s[key]["p_sign"] > 0.05


def test_bins_combine_lengths_and_sum_to_one():
    shares = [positive_share(np.arange(1.0, t + 1)) for t in (2, 7, 30)]
    prof = temporal_profile(shares, n_bins=4, n_boot=50)
    assert prof["bin_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert sum(prof["overall"]["bins"]["mean"]) == pytest.approx(1.0)
    assert sum(prof["overall"]["bins"]["uniform"]) == pytest.approx(1.0)
    # a 2-frame clip puts its frames at 0.25 and 0.75: bins 1 and 3 (left-closed bins)
    single = temporal_profile([positive_share([1.0, 3.0])], n_bins=4, n_boot=10)
    assert single["overall"]["bins"]["mean"] == pytest.approx([0.0, 0.25, 0.0, 0.75])


def test_bootstrap_deterministic_per_class_and_json():
    shares = _last_frame_videos(12) + [positive_share(np.ones(9)) for _ in range(6)]
    shares.append(positive_share(-np.ones(5)))  # undefined video
    labels = [0] * 12 + [1] * 6 + [1]
    kwargs = dict(labels=labels, class_names=["late", "flat", "empty"], n_boot=300, seed=7)
    a, b = temporal_profile(shares, **kwargs), temporal_profile(shares, **kwargs)
    assert a == b
    c = temporal_profile(shares, **{**kwargs, "seed": 8})
    assert c["overall"]["summary"]["second_half"]["lo"] != a["overall"]["summary"]["second_half"]["lo"]
    assert a["n_undefined"] == 1 and a["undefined_videos"] == [18] and a["n_videos"] == 18
    assert a["per_class"]["late"]["summary"]["last_frame"]["mean"] == pytest.approx(1.0)
    assert a["per_class"]["flat"]["summary"]["second_half"]["mean"] == pytest.approx(0.5)
    assert a["per_class"]["empty"]["n_videos"] == 0 and a["per_class"]["empty"]["bins"]["mean"][0] is None
    json.dumps(a, allow_nan=False)  # strict JSON: no NaN


def test_profile_errors():
    with pytest.raises(ValueError, match="empty"):
        temporal_profile([])
    with pytest.raises(ValueError, match="no positive relevance"):
        temporal_profile([positive_share([-1.0, -1.0])])
    with pytest.raises(ValueError, match="positive_share"):
        temporal_profile([np.array([2.0, 3.0])])
    with pytest.raises(ValueError, match="one label per video"):
        temporal_profile([positive_share([1.0, 1.0])], labels=[0, 1])
    with pytest.raises(ValueError, match="ci"):
        temporal_profile([positive_share([1.0, 1.0])], ci=95)


def test_profile_figure_renders(tmp_path):
    shares = _last_frame_videos(10) + [positive_share(np.ones(8)) for _ in range(5)]
    prof = temporal_profile(shares, labels=[0] * 10 + [1] * 5, class_names=["a", "b"], n_boot=100)
    fig = profile_figure(prof)
    fig.savefig(tmp_path / "profile.png", dpi=50)
    with Image.open(tmp_path / "profile.png") as img:
        assert img.format == "PNG" and img.mode in ("RGB", "RGBA") and img.width > 0
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "a (n=10)" in legend and "uniform expectation" in legend
    with pytest.raises(ValueError, match="temporal_profile"):
        profile_figure({"nope": 1})


@pytest.mark.parametrize(("n_greater", "n_less"), [(3, 0), (5, 5), (10, 2), (0, 4), (40, 25)])
def test_sign_test_matches_exact_binomial_tail(n_greater, n_less):
    import math

    from vidxai.viz.profile import _sign_test_greater

    n = n_greater + n_less
    exact = sum(math.comb(n, i) for i in range(n_greater, n + 1)) / 2**n
    diffs = np.r_[np.full(n_greater, 0.1), np.full(n_less, -0.1), np.zeros(3)]  # zeros are ties
    p, g, l = _sign_test_greater(diffs)
    assert (g, l) == (n_greater, n_less)
    assert p == pytest.approx(exact, rel=1e-10)


def test_halves_of_an_odd_clip_are_defined_once() -> None:
    """The middle frame of an odd-length clip counts half in each half, in the summary and in the profile."""
    from vidxai.pipelines.modes.single import relevance_summary
    from vidxai.viz.profile import first_half_weights, temporal_shares

    np.testing.assert_array_equal(first_half_weights(5), [1.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(first_half_weights(4), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(first_half_weights(1), [0.5])
    share = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    expected = {"first_half": 0.1 + 0.2 + 0.15, "second_half": 0.15 + 0.4, "last_frame": 0.0}
    assert temporal_shares(share) == pytest.approx(expected)

    pixel = share[:, None, None] * np.ones((5, 2, 3)) / 6.0  # positive relevance per frame = share
    summary = relevance_summary(pixel, np.array([0.0, 1.0]), 1, ["a", "b"])["positive_share"]
    profile = temporal_profile([share], n_bins=5, n_boot=10)["overall"]["summary"]
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key
        assert profile[key]["mean"] == pytest.approx(value), key
    uniform = temporal_shares(np.full(7, 1 / 7))
    assert uniform["first_half"] == pytest.approx(0.5) and uniform["second_half"] == pytest.approx(0.5)
