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

from vidxai.evaluation.summary import separable  # noqa: E402

__all__ = ["FAMILY_COLOURS", "evaluation_figure", "method_colours", "mprt_figure", "ranked", "readable_steps"]

#: One colour map per method family (a method's shade: its position within the family).
FAMILY_COLOURS: dict[str, str] = {"lrp": "Blues", "captum": "Oranges", "perturbation": "Greens",
                                  "attention": "Purples", "random": "Greys"}
_ARROWS = {"higher": "higher is better ↑", "lower": "lower is better ↓", "none": "diagnostic"}
_PANELS = (
    ("frame_morf", "frames removed, most relevant first (MoRF)", "frame_random"),
    ("frame_lerf", "frames removed, least relevant first (LeRF)", "frame_random"),
    ("region_morf", "regions removed, most relevant first", "region_random"),
)


def _families(result: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, m in result.get("methods", {}).items():
        settings = m.get("settings") or {}
        out[name] = m.get("family") or ("lrp" if "rule" in settings else "random" if name == "random" else "captum")
    return out


def method_colours(result: Mapping[str, Any]) -> dict[str, Any]:
    """One colour per method: its family's colour map, shades spread over the family's members."""
    families = _families(result)
    members: dict[str, list[str]] = {}
    for name, fam in families.items():
        members.setdefault(fam, []).append(name)
    out = {}
    for fam, names in members.items():
        cmap = plt.get_cmap(FAMILY_COLOURS.get(fam, "Reds"))
        for k, name in enumerate(names):
            out[name] = "0.45" if fam == "random" else cmap(0.45 + 0.5 * (k / max(1, len(names) - 1)))
    return out


def _style(family: str | None) -> str:
    return "-" if family == "lrp" else "--"


def ranked(methods: Mapping[str, Any], score: str, higher_is_better: bool = True) -> list[tuple[str, float]]:
    """``(method, value)`` for methods with a finite ``score``, best first."""
    items = [(n, float(m[score])) for n, m in methods.items()
             if isinstance(m, Mapping) and m.get(score) is not None and np.isfinite(m[score])]
    return sorted(items, key=lambda kv: -kv[1] if higher_is_better else kv[1])


def readable_steps(steps: Sequence[str]) -> list[str]:
    """Cascade step names in words: ``classifier head``, ``recurrent part (lstm)``, ``conv block 5 of 5``
    (numbered from the input), ``layer4`` (a named container, e.g. a ResNet layer)."""
    blocks = [s for s in steps if "." in s]
    out = []
    for s in steps:
        if s == "head":
            out.append("classifier head")
        elif "." not in s:
            out.append(f"recurrent part ({s})")
        else:
            tail = s.split(".", 1)[1]
            k = len(blocks) - blocks.index(s)
            out.append(tail if tail.isidentifier() else f"conv block {k} of {len(blocks)}")
    return out


def evaluation_figure(result: Mapping[str, Any], title: str | None = None) -> plt.Figure:
    """Flipping curves (MoRF, LeRF, regions, by position) on top; one ranked bar chart per score below."""
    methods = {n: m for n, m in result.get("methods", {}).items() if "error" not in m or m.get("videos")}
    curves = result.get("curves", {})
    families = _families(result)
    names = [n for n in methods if n in curves]
    colours = method_colours(result)
    metrics = result.get("metrics", {})
    scores = [k for k, m in metrics.items() if "left_out" not in m and any(methods[n].get(k) is not None
                                                                           for n in methods)]
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
        better = "lower curve is better" if key.endswith("morf") else "higher curve is better"
        ax.set_title(f"{label}\n({better})", fontsize=10)
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
    ax.set_title("frames removed by position (all methods)\n(lower curve: the frames matter more)", fontsize=10)
    ax.set_xlabel("frames removed")
    ax.set_ylabel("target logit")
    ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    if handles:
        fig.axes[0].legend(handles, labels, fontsize=7, ncol=2, loc="best")

    for k, score in enumerate(scores):
        ax = fig.add_subplot(grid[1 + k // 4, k % 4])
        _bars(ax, result, methods, score, colours)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _bars(ax: Any, result: Mapping[str, Any], methods: Mapping[str, Any], score: str,
          colours: Mapping[str, Any]) -> None:
    """One ranked bar chart with 95% CIs; black edge: tied with the best; dotted line: chance."""
    m = result["metrics"][score]
    higher = m["direction"] != "lower"
    items = ranked(methods, score, higher)
    comp = result.get("comparisons", {}).get(score, {})
    if items:
        ys = np.arange(len(items))[::-1]
        cis = [(methods[n].get("ci") or {}).get(score) or [None, None] for n, _ in items]
        err = np.array([[v - (c[0] if c[0] is not None else v), (c[1] if c[1] is not None else v) - v]
                        for (_, v), c in zip(items, cis)]).T
        decided = separable(dict(result), score)  # too few videos: no test can decide, so no edge
        tied = [decided and bool(comp.get(n, {}).get("tied_with_best")) for n, _ in items]
        ax.barh(ys, [v for _, v in items], xerr=err, capsize=2, color=[colours.get(n, "0.5") for n, _ in items],
                edgecolor=["k" if t else "none" for t in tied], linewidth=1.2, error_kw={"lw": 0.8})
        ax.set_yticks(ys, [n for n, _ in items], fontsize=8)
        if m.get("chance") is not None:
            ax.axvline(m["chance"], color="k", ls=":", lw=1.5, label="chance / random order")
            ax.legend(fontsize=7, loc="lower right")
    edge = "; black edge: tied with the best" if m["direction"] != "none" else ""
    if m["direction"] != "none" and comp and not separable(dict(result), score):
        edge = "; too few videos to rank"
    ax.set_title(f"{m['label']}\n({_ARROWS[m['direction']]}{edge})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def mprt_figure(result: Mapping[str, Any], title: str | None = None) -> plt.Figure:
    """Mean Spearman rank correlation of ``|map|`` with the original per cascade step, one line per method."""
    steps: Sequence[str] = result.get("mprt", {}).get("steps", [])
    families = _families(result)
    colours = method_colours(result)
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
    ax.set_xticks(range(len(steps)), readable_steps(steps), rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("randomised up to and including (from the output down; conv blocks numbered from the input)")
    ax.set_ylabel("Spearman with the original |map|\n(lower is better ↓)", fontsize=9)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(min(-0.2, lowest - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.set_title(title or f"cascading parameter randomisation ({result.get('mprt', {}).get('videos', 0)} videos)",
                 fontsize=10)
    return fig
