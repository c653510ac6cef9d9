"""Figures of the explanation evaluation: flipping curves, ranked score bars, the randomisation test.

Pure functions of the evaluation's result dict (``vidxai.evaluation.evaluate``); no model code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["SCORE_LABELS", "evaluation_figure", "mprt_figure", "ranked"]

#: Method-dependent scores shown as ranked bars: key -> (label, higher is better, reference key).
SCORE_LABELS: dict[str, tuple[str, bool, str | None]] = {
    "frame_aopc_morf": ("frame AOPC, MoRF", True, "frame_aopc_random"),
    "frame_aopc_lerf": ("frame AOPC, LeRF (lower = better)", False, "frame_aopc_random"),
    "region_aopc_morf": ("region AOPC, MoRF", True, "region_aopc_random"),
    "mass_accuracy": ("relevance mass accuracy", True, "chance"),
    "rank_accuracy": ("relevance rank accuracy", True, "chance"),
    "pointing_game": ("pointing game", True, "chance"),
    "temporal_accuracy": ("temporal accuracy", True, "chance"),
}

_PANELS = (
    ("frame_morf", "frames removed, most relevant first (MoRF)", "frame_random"),
    ("frame_lerf", "frames removed, least relevant first (LeRF)", "frame_random"),
    ("region_morf", "regions removed, most relevant first", "region_random"),
)


def _colours(result: Mapping[str, Any]) -> dict[str, Any]:
    """One colour per method, by its position in ``result["methods"]`` (the same in every figure)."""
    cmap = plt.get_cmap("tab20")
    return {n: "0.45" if n == "random" else cmap(i % 20) for i, n in enumerate(result.get("methods", {}))}


def _style(family: str | None) -> str:
    return "-" if family == "lrp" else "--"


def ranked(methods: Mapping[str, Any], score: str, higher_is_better: bool = True) -> list[tuple[str, float]]:
    """``(method, value)`` for methods with a finite ``score``, best first."""
    items = [(n, float(m[score])) for n, m in methods.items()
             if isinstance(m, Mapping) and m.get(score) is not None and np.isfinite(m[score])]
    return sorted(items, key=lambda kv: -kv[1] if higher_is_better else kv[1])


def _families(result: Mapping[str, Any]) -> dict[str, str | None]:
    out = {}
    for name, m in result.get("methods", {}).items():
        settings = m.get("settings") or {}
        out[name] = "lrp" if "rule" in settings else ("random" if name == "random" else "captum")
    return out


def evaluation_figure(result: Mapping[str, Any], title: str | None = None) -> plt.Figure:
    """Flipping curves (MoRF, LeRF, regions, by position) on top; one ranked bar chart per score below."""
    methods = {n: m for n, m in result.get("methods", {}).items() if "error" not in m or m.get("videos")}
    curves = result.get("curves", {})
    families = _families(result)
    names = [n for n in methods if n in curves]
    colours = _colours(result)
    scores = [k for k in SCORE_LABELS if any(methods[n].get(k) is not None for n in methods)]
    n_bar_rows = -(-len(scores) // 4)
    fig = plt.figure(figsize=(18, 4.2 * (1 + n_bar_rows)), layout="constrained")
    grid = fig.add_gridspec(1 + n_bar_rows, 4)

    for col, (key, label, ref) in enumerate(_PANELS):
        ax = fig.add_subplot(grid[0, col])
        for n in names:
            c = curves[n].get(key)
            if c is not None:
                ax.plot(range(len(c)), c, _style(families.get(n)), color=colours[n], lw=1.4, label=n)
        if names and curves[names[0]].get(ref) is not None:
            c = curves[names[0]][ref]
            ax.plot(range(len(c)), c, ":", color="k", lw=2, label="random order")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("steps" if key.startswith("region") else "frames removed")
        ax.set_ylabel("target logit")
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[0, 3])
    if names:
        first = curves[names[0]]
        for key, lab, style in (("frame_last_first", "last frame first", "-"),
                                ("frame_first_first", "first frame first", "--"), ("frame_random", "random", ":")):
            if first.get(key) is not None:
                ax.plot(range(len(first[key])), first[key], style, color="k", lw=1.8, label=lab)
        ax.legend(fontsize=8)
    ax.set_title("frames removed by position (all methods)", fontsize=10)
    ax.set_xlabel("frames removed")
    ax.set_ylabel("target logit")
    ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    if handles:
        fig.axes[0].legend(handles, labels, fontsize=7, ncol=2, loc="best")

    chance = result.get("chance", {})
    for k, score in enumerate(scores):
        label, higher, ref = SCORE_LABELS[score]
        ax = fig.add_subplot(grid[1 + k // 4, k % 4])
        items = ranked(methods, score, higher)
        if items:
            ys = np.arange(len(items))[::-1]
            ax.barh(ys, [v for _, v in items], color=[colours.get(n, "0.5") for n, _ in items])
            ax.set_yticks(ys, [n for n, _ in items], fontsize=8)
            ref_value = chance.get(score) if ref == "chance" else _shared(methods, ref)
            if ref_value is not None:
                ax.axvline(ref_value, color="k", ls=":", lw=1.5, label="chance" if ref == "chance" else "random order")
                ax.legend(fontsize=7, loc="lower right")
        ax.set_title(label, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _shared(methods: Mapping[str, Any], key: str | None) -> float | None:
    """A method-independent score (the same for every method): the first finite one."""
    for m in methods.values():
        v = m.get(key) if key else None
        if v is not None and np.isfinite(v):
            return float(v)
    return None


def mprt_figure(result: Mapping[str, Any], title: str | None = None) -> plt.Figure:
    """Mean Spearman rank correlation of ``|map|`` with the original per cascade step, one line per method."""
    steps: Sequence[str] = result.get("mprt", {}).get("steps", [])
    families = _families(result)
    colours = _colours(result)
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(steps) + 4), 4.8), layout="constrained")
    lowest = 0.0
    for name, m in result.get("methods", {}).items():
        values = m.get("mprt_spearman")
        if not values:
            continue
        y = [np.nan if v is None else v for v in values]
        lowest = min(lowest, float(np.nanmin(y)) if np.isfinite(y).any() else 0.0)
        ax.plot(range(len(y)), y, _style(families.get(name)), marker="o", ms=3, color=colours[name],
                label=name)
    ax.set_xticks(range(len(steps)), list(steps), rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("randomised up to and including (cascade from the output down)")
    ax.set_ylabel("Spearman rank correlation of |map| with the original")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(min(-0.2, lowest - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.set_title(title or f"cascading parameter randomisation ({result.get('mprt', {}).get('videos', 0)} videos)",
                 fontsize=10)
    return fig
