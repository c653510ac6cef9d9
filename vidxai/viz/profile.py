"""Dataset-level temporal relevance profile: where in the clip does the model find its evidence?

This tests the paper's conclusion that the VGG16+LSTM classifier "tends to use the frames biased
towards the latter half of the video and the last frame". Per video, the positive relevance per
frame is normalised to shares summing to 1 (:func:`positive_share`); :func:`temporal_profile`
places frame ``t`` of a ``T``-frame clip at normalised time ``(t + 0.5) / T`` so clips of different
lengths combine, averages over videos with bootstrap confidence intervals (resampling videos), and
compares against the uniform expectation (relevance spread evenly over frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

#: Names of the summary statistics, in the order of the figure's bar panel.
SUMMARY_KEYS = ("first_half", "second_half", "last_frame")
#: Per-video differences to the uniform expectation smaller than this count as ties in the sign test.
SIGN_TEST_TOL = 1e-9


def positive_mass(pixel: np.ndarray) -> np.ndarray:
    """Positive relevance per frame, ``sum over pixels of max(R, 0)`` for ``(T,H,W)`` relevance -> ``(T,)``.

    Positive evidence is counted per pixel (as in the paper's "only consider the positive"), so a frame with
    strong positive and negative regions is not mistaken for an irrelevant one.
    """
    return np.clip(np.asarray(pixel, dtype=np.float64), 0.0, None).reshape(len(pixel), -1).sum(axis=1)


def positive_share(frame_relevance: Sequence[float] | np.ndarray) -> np.ndarray:
    """Share of positive relevance per frame: ``max(R_t, 0) / sum_t max(R_t, 0)``, float ``(T,)``.

    ``frame_relevance`` is any per-frame relevance (e.g. ``Explanation.frame`` or
    ``frame_scores(pixel)["mean_pos"]``). Negative values are clipped to 0. When no frame has
    positive relevance the share is undefined and all entries are NaN (not a uniform guess, which
    would bias a profile towards "uniform"); :func:`temporal_profile` counts such videos as
    undefined and leaves them out.
    """
    rel = np.asarray(frame_relevance, dtype=np.float64)
    if rel.ndim != 1 or rel.shape[0] == 0:
        raise ValueError(f"frame_relevance must be a non-empty 1-D array (T,), got shape {rel.shape}")
    if not np.all(np.isfinite(rel)):
        raise ValueError("frame_relevance contains NaN or inf values; check the explanation that produced it")
    pos = np.maximum(rel, 0.0)
    total = pos.sum()
    if total <= 0.0:
        return np.full(rel.shape, np.nan)
    return pos / total


def first_half_weights(t: int) -> np.ndarray:
    """How much of each of ``t`` frames belongs to the first half of the clip, float ``(t,)``.

    Frame ``i`` sits at time ``(i + 0.5) / t``: 1 before time 0.5, 0 after. The convention for an
    odd-length clip: its middle frame sits exactly at 0.5 and counts half in each half, so the halves
    always add up to the whole and a uniform clip gives 0.5 / 0.5 at every length. The second half's
    weights are ``1 - first_half_weights(t)``. The one definition of the halves (summaries and profiles).
    """
    if t < 1:
        raise ValueError(f"a clip has at least one frame, got t={t}")
    twice_pos = 2 * np.arange(t) + 1  # compare (i + 0.5) / t with 0.5 exactly, in integers
    return np.where(twice_pos < t, 1.0, np.where(twice_pos == t, 0.5, 0.0))


def temporal_shares(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``first_half``, ``second_half`` and ``last_frame`` of per-frame values ``(T,)`` (e.g. a :func:`positive_share`).

    The halves follow :func:`first_half_weights` (an odd clip's middle frame counts half in each).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"values must be a non-empty 1-D array (T,), got shape {v.shape}")
    w = first_half_weights(v.shape[0])
    return {"first_half": float(v @ w), "second_half": float(v @ (1.0 - w)), "last_frame": float(v[-1])}


def _per_video_stats(share: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed and uniform-expected values ``(n_bins + 3,)``: bin masses, then :func:`temporal_shares`."""
    t = share.shape[0]
    idx = np.arange(t)
    bins = np.minimum(((idx + 0.5) / t * n_bins).astype(int), n_bins - 1)
    uniform = np.full(t, 1.0 / t)
    observed, expected = np.empty(n_bins + 3), np.empty(n_bins + 3)
    for values, out in ((share, observed), (uniform, expected)):
        out[:n_bins] = np.bincount(bins, weights=values, minlength=n_bins)
        summary = temporal_shares(values)
        out[n_bins:] = [summary[key] for key in SUMMARY_KEYS]
    return observed, expected


def _sign_test_greater(diff: np.ndarray) -> tuple[float, int, int]:
    """One-sided exact sign test of "median difference > 0"; ties (|d| <= tol) are dropped."""
    n_greater = int(np.sum(diff > SIGN_TEST_TOL))
    n_less = int(np.sum(diff < -SIGN_TEST_TOL))
    n = n_greater + n_less
    if n == 0:
        return 1.0, n_greater, n_less
    # P(X >= n_greater) for X ~ Binomial(n, 1/2), summed in log space (fast and exact enough for any n)
    i = np.arange(n_greater, n + 1)
    log_terms = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in i])
    log_terms -= n * math.log(2.0)
    top = log_terms.max()
    p = math.exp(top) * float(np.exp(log_terms - top).sum())
    return min(1.0, p), n_greater, n_less


def _none_if_nan(values: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _bootstrap_block(
    observed: np.ndarray,
    expected: np.ndarray,
    n_bins: int,
    n_boot: int,
    ci: float,
    seed_seq: np.random.SeedSequence,
) -> dict:
    """Means, bootstrap CIs (resampling videos) and one-sided p-values for one group of videos."""
    n = observed.shape[0]
    if n == 0:
        nones = [None] * n_bins
        return {
            "n_videos": 0,
            "bins": {"mean": nones, "lo": nones, "hi": nones, "uniform": nones},
            "summary": {
                k: {"mean": None, "lo": None, "hi": None, "uniform": None, "p_boot": None, "p_sign": None,
                    "n_greater": 0, "n_less": 0}
                for k in SUMMARY_KEYS
            },
        }
    rng = np.random.default_rng(seed_seq)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (n_boot, n)
    boot = counts @ observed / n
    boot_diff = counts @ (observed - expected) / n
    lo, hi = np.quantile(boot, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0], axis=0)
    mean, uniform = observed.mean(axis=0), expected.mean(axis=0)
    summary = {}
    for j, key in enumerate(SUMMARY_KEYS, start=n_bins):
        p_sign, n_greater, n_less = _sign_test_greater(observed[:, j] - expected[:, j])
        summary[key] = {
            "mean": float(mean[j]),
            "lo": float(lo[j]),
            "hi": float(hi[j]),
            "uniform": float(uniform[j]),
            # share of bootstrap means not above the uniform expectation (+1 smoothing)
            "p_boot": float((1 + np.sum(boot_diff[:, j] <= 0.0)) / (n_boot + 1)),
            "p_sign": float(p_sign),
            "n_greater": n_greater,
            "n_less": n_less,
        }
    return {
        "n_videos": int(n),
        "bins": {
            "mean": _none_if_nan(mean[:n_bins]),
            "lo": _none_if_nan(lo[:n_bins]),
            "hi": _none_if_nan(hi[:n_bins]),
            "uniform": _none_if_nan(uniform[:n_bins]),
        },
        "summary": summary,
    }


def _check_profile_args(
    shares: Sequence[np.ndarray], labels: Sequence[int] | None, class_names: Sequence[str] | None, n_bins: int,
    n_boot: int, ci: float,
) -> Sequence[str] | None:
    """One clear ``ValueError`` for a bad argument of :func:`temporal_profile`; the class names to use."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95, got {ci}")
    if len(shares) == 0:
        raise ValueError("shares is empty; pass one positive_share(...) vector per video")
    if labels is None:
        return class_names
    labels = [int(c) for c in labels]
    if len(labels) != len(shares):
        raise ValueError(f"labels has {len(labels)} entries but shares has {len(shares)}; pass one label per video")
    if class_names is None:
        class_names = [str(c) for c in range(max(labels) + 1)]
    bad = [c for c in labels if not 0 <= c < len(class_names)]
    if bad:
        raise ValueError(f"labels {sorted(set(bad))} out of range for {len(class_names)} class_names")
    return class_names


def _video_stats(shares: Sequence[np.ndarray], n_bins: int) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Per defined video its observed and uniform bin values (stacked), the kept and the undefined indices."""
    observed, expected, kept, undefined = [], [], [], []
    for i, share in enumerate(shares):
        arr = np.asarray(share, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(f"shares[{i}] must be a non-empty 1-D array (T,), got shape {arr.shape}")
        if np.all(np.isnan(arr)):
            undefined.append(i)
            continue
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or not math.isclose(arr.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"shares[{i}] is not a share vector (non-negative, finite, sums to 1; sum = {np.nansum(arr):.4g}); "
                "pass positive_share(frame_relevance) for each video"
            )
        obs, exp = _per_video_stats(arr, n_bins)
        observed.append(obs)
        expected.append(exp)
        kept.append(i)
    if not kept:
        raise ValueError(
            f"all {len(shares)} videos have no positive relevance (positive_share is NaN); nothing to profile"
        )
    return np.stack(observed), np.stack(expected), kept, undefined


def temporal_profile(
    shares: Sequence[np.ndarray],
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    n_bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Where positive relevance sits in time, over a dataset, with bootstrap CIs; JSON-serialisable.

    ``shares`` holds one :func:`positive_share` vector ``(T_i,)`` per video (lengths may differ);
    all-NaN vectors are undefined videos, counted in ``n_undefined`` and left out. Frame ``t`` is
    placed at ``(t + 0.5) / T_i`` in ``n_bins`` equal bins over ``[0, 1]``; a video's value for a bin
    is the sum of its shares there (so bins sum to 1 per video) and its uniform expectation is the
    fraction of its frames there. Returned dict::

        {"n_bins", "bin_edges", "bin_centers", "n_boot", "seed", "ci",
         "n_videos", "n_undefined", "undefined_videos",
         "overall": {"n_videos", "bins": {"mean", "lo", "hi", "uniform"},
                     "summary": {"first_half" | "second_half" | "last_frame":
                                 {"mean", "lo", "hi", "uniform", "p_boot", "p_sign", "n_greater", "n_less"}}},
         "per_class": {class name: same as "overall"}}

    ``first_half``/``second_half`` are the shares before/after time 0.5 (uniform: 0.5 each; an odd
    clip's middle frame counts half in each, see :func:`first_half_weights`),
    ``last_frame`` the last frame's share (uniform: the mean of ``1/T_i``). Both p-values are
    one-sided for "observed > uniform": ``p_sign`` an exact sign test over videos, ``p_boot`` the
    bootstrap share of resampled means at or below uniform. Groups without videos hold ``None``.
    """
    class_names = _check_profile_args(shares, labels, class_names, n_bins, n_boot, ci)
    labels = None if labels is None else [int(c) for c in labels]
    obs_arr, exp_arr, kept, undefined = _video_stats(shares, n_bins)

    names = list(class_names) if (labels is not None and class_names is not None) else []
    seeds = np.random.SeedSequence(seed).spawn(1 + len(names))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    result = {
        "n_bins": int(n_bins),
        "bin_edges": edges.tolist(),
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "ci": float(ci),
        "n_videos": len(kept),
        "n_undefined": len(undefined),
        "undefined_videos": undefined,
        "overall": _bootstrap_block(obs_arr, exp_arr, n_bins, n_boot, ci, seeds[0]),
        "per_class": {},
    }
    if labels is not None:
        kept_labels = np.array([labels[i] for i in kept])
        for c, name in enumerate(names):
            mask = kept_labels == c
            result["per_class"][str(name)] = _bootstrap_block(
                obs_arr[mask], exp_arr[mask], n_bins, n_boot, ci, seeds[1 + c]
            )
    return result


def _p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "p<0.001" if p < 1e-3 else f"p={p:.3f}"


def profile_figure(profile: dict, title: str | None = None) -> Figure:
    """Plot a :func:`temporal_profile`: mean share per time bin with CI band vs uniform, per-class
    thin lines, and a bar panel for first half / second half / last frame vs uniform (sign-test p).
    """
    try:
        centers = np.asarray(profile["bin_centers"], dtype=np.float64)
        overall = profile["overall"]
        bins = overall["bins"]
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"profile_figure expects the dict returned by temporal_profile (missing {err})"
        ) from None
    n_bins = centers.shape[0]
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax, bar_ax = fig.subplots(1, 2, width_ratios=[2.3, 1.0])

    per_class = profile.get("per_class", {})
    cmap_colors = [f"C{i % 10}" for i in range(len(per_class))]
    for color, (name, block) in zip(cmap_colors, per_class.items()):
        if block["n_videos"] == 0:
            continue
        ax.plot(centers, block["bins"]["mean"], lw=0.8, alpha=0.55, color=color,
                label=f"{name} (n={block['n_videos']})")
    mean = np.asarray(bins["mean"], dtype=np.float64)
    ax.fill_between(centers, bins["lo"], bins["hi"], color="black", alpha=0.18, lw=0,
                    label=f"{round(100 * profile['ci'])}% bootstrap CI")
    ax.plot(
        centers, mean, color="black", lw=2.2, marker="o", ms=4, label=f"all videos (n={overall['n_videos']})"
    )
    ax.plot(centers, bins["uniform"], color="0.35", ls="--", lw=1.4, label="uniform expectation")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xticks(np.linspace(0.0, 1.0, 6))
    ax.set_xlabel("normalised time in clip (0 = start, 1 = end)")
    ax.set_ylabel(f"share of positive relevance per bin ({n_bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncols=2 if len(per_class) > 6 else 1, framealpha=0.8)

    summary = overall["summary"]
    x = np.arange(len(SUMMARY_KEYS))
    obs = np.array([summary[k]["mean"] for k in SUMMARY_KEYS], dtype=np.float64)
    err = np.array([[summary[k]["mean"] - summary[k]["lo"] for k in SUMMARY_KEYS],
                    [summary[k]["hi"] - summary[k]["mean"] for k in SUMMARY_KEYS]])
    uni = np.array([summary[k]["uniform"] for k in SUMMARY_KEYS], dtype=np.float64)
    width = 0.38
    bar_ax.bar(x - width / 2, obs, width, yerr=err, capsize=3, color="tab:red", alpha=0.8, label="observed")
    bar_ax.bar(x + width / 2, uni, width, color="0.7", hatch="//", edgecolor="0.4", label="uniform")
    for xi, key in zip(x, SUMMARY_KEYS):
        top = max(summary[key]["hi"], summary[key]["uniform"])
        bar_ax.text(xi, top + 0.02, _p_text(summary[key]["p_sign"]), ha="center", fontsize=8)
    bar_ax.set_xticks(x, ["first half", "second half", "last frame"])
    bar_ax.set_ylim(0.0, min(1.15, max(1.0, float(np.nanmax(obs + err[1])) + 0.12)))
    bar_ax.set_ylabel("share of positive relevance")
    bar_ax.set_title("vs uniform (one-sided sign test)", fontsize=9)
    bar_ax.legend(fontsize=7, loc="upper left")
    n_undef = profile.get("n_undefined", 0)
    note = f"  ({n_undef} video(s) without positive relevance left out)" if n_undef else ""
    fig.suptitle((title or "Temporal relevance profile") + note)
    return fig
