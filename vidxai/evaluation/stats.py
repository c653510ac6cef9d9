"""Paired statistics over videos: bootstrap CIs, Wilcoxon signed-rank tests, Holm's correction.

Every method is scored on the same videos, so methods are compared *paired*: on each video, the difference
of a method's score and the best method's score. For each score:

* the **mean** of each method, with a percentile bootstrap 95% CI over videos;
* the **best** method: the best mean in the score's direction;
* for every other method, on the videos both have a value: the mean difference to the best (method minus
  best), its paired bootstrap 95% CI (videos resampled with replacement, ``n_boot`` times) and the two-sided
  Wilcoxon signed-rank p-value (scipy; zero differences dropped; p = 1 when all differences are zero),
  Holm-corrected across the methods compared with the best;
* **tied with the best**: not significantly worse, i.e. NOT (Holm-corrected p < ``alpha`` and the mean
  difference points the worse way).

**Power.** The exact two-sided signed-rank test on ``n`` non-zero differences can give no p below
``2 / 2**n`` (every difference with the same sign), and Holm's correction multiplies the smallest p by the
number of comparisons ``m``: with ``m * 2 / 2**n >= alpha`` no method can be told apart from the best (or from
random), whatever the maps. :func:`smallest_p` and :func:`videos_needed` say when; the summary says it first.
The bootstrap CIs describe the size of a difference; they never decide a tie.

The bootstrap draws come from ``numpy.random.default_rng([seed, k])`` (``k`` = the score's position), so the
numbers are the same on every run with the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "compare_with_best", "holm", "paired_test", "smallest_p", "videos_needed"]


def bootstrap_ci(values: Sequence[float], n_boot: int, rng: np.random.Generator, level: float = 0.95
                 ) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean (``None`` with fewer than two values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None, None
    means = v[rng.integers(0, v.size, size=(int(n_boot), v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def wilcoxon_p(diff: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired differences (1.0 when all are zero, None when empty)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return None
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def smallest_p(n: int, comparisons: int = 1) -> float:
    """The smallest Holm-adjusted p that ``comparisons`` exact two-sided Wilcoxon signed-rank tests on ``n``
    paired videos can reach: ``comparisons * 2 / 2**n`` (capped at 1)."""
    if n <= 0:
        return 1.0
    return min(1.0, max(1, comparisons) * 2.0 / 2.0 ** n)


def videos_needed(comparisons: int, alpha: float = 0.05) -> int:
    """The fewest paired videos with which ``comparisons`` Holm-corrected exact Wilcoxon tests can reach
    p < ``alpha``: the smallest ``n`` with ``comparisons * 2 / 2**n < alpha``."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha} must lie in (0, 1]")
    n = 1
    while smallest_p(n, comparisons) >= alpha:
        n += 1
    return n


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); ``None`` stays ``None``."""
    items = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda x: x[0])
    m, running, out = len(items), 0.0, dict.fromkeys(pvalues)
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def paired_test(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict[str, float | None]:
    """``mean(a - b)``, its paired bootstrap 95% CI and the Wilcoxon p (unadjusted) over rows where both are set."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    d = a[both] - b[both]
    lo, hi = bootstrap_ci(d, n_boot, rng)
    return {"diff": float(d.mean()) if d.size else None, "ci_low": lo, "ci_high": hi, "p_raw": wilcoxon_p(d),
            "videos": int(d.size)}


def compare_with_best(
    values: Mapping[str, np.ndarray], higher_is_better: bool, n_boot: int, seed: Any, alpha: float = 0.05,
    against: str | None = None,
) -> tuple[str | None, dict[str, dict[str, float | bool | None]]]:
    """``(best, {method: {diff, ci_low, ci_high, p, tied_with_best, videos}})`` for per-video ``values``.

    ``values[method]`` holds one value per video (NaN where absent), the same videos in the same order for
    every method. ``against`` compares with that method instead of the best (e.g. ``random``).
    """
    means = {n: float(np.nanmean(v)) for n, v in values.items() if np.isfinite(v).any()}
    if not means:
        return None, {}
    best = against if against is not None else (max if higher_is_better else min)(means, key=means.get)
    if best not in means:
        return None, {}
    rng = np.random.default_rng(seed)
    out = {n: paired_test(values[n], values[best], n_boot, rng) for n in means if n != best}
    adjusted = holm({n: r["p_raw"] for n, r in out.items()})
    for n, r in out.items():
        r["p"] = adjusted[n]
        worse = r["diff"] is not None and (r["diff"] < 0 if higher_is_better else r["diff"] > 0)
        r["tied_with_best"] = not (r["p"] is not None and r["p"] < alpha and worse)
    out[best] = {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p": None, "p_raw": None, "tied_with_best": True,
                 "videos": int(np.isfinite(values[best]).sum()), "best": True}
    return best, out
