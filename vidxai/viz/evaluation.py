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

from vidxai.evaluation.curves import CURVES, method_curves  # noqa: E402
from vidxai.evaluation.methods import family_of  # noqa: E402
from vidxai.evaluation.registry import METHODS  # noqa: E402
from vidxai.evaluation.summary import separable  # noqa: E402

__all__ = ["evaluation_figure", "method_colours", "mprt_figure", "ranked", "readable_steps"]

_ARROWS = {"higher": "higher is better ↑", "lower": "lower is better ↓", "none": "diagnostic"}


def _families(result: Mapping[str, Any]) -> dict[str, Any]:
    """Each method's :class:`~vidxai.evaluation.registry.MethodFamily`: the family the result records, else that
    of the method's registration."""
    return {name: family_of(name, m.get("family")) for name, m in result.get("methods", {}).items()}


def method_colours(result: Mapping[str, Any]) -> dict[str, Any]:
    """One colour per method, from its registration: its own ``colour``, else a shade of its family's colour map
    (shades spread over the family's members), or the family's one colour."""
    members: dict[str, list[str]] = {}
    families = _families(result)
    for name, fam in families.items():
        members.setdefault(fam.name, []).append(name)
    out = {}
    for names in members.values():
        fam = families[names[0]]
        cmap = matplotlib.colormaps[fam.colours] if fam.colours in matplotlib.colormaps else None
        for k, name in enumerate(names):
            own = METHODS[name].colour if name in METHODS else None
            out[name] = own or (fam.colours if cmap is None else cmap(0.45 + 0.5 * (k / max(1, len(names) - 1))))
    return out


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
    panels = method_curves()
    positions = [c for c in CURVES.values() if not c.per_method and c.unit == "frame"]
    n_top = len(panels) + (1 if positions else 0)
    n_top_rows, n_bar_rows = -(-n_top // 4), -(-len(scores) // 4)
    fig = plt.figure(figsize=(18, 4.2 * (n_top_rows + n_bar_rows)), layout="constrained")
    grid = fig.add_gridspec(n_top_rows + n_bar_rows, 4)

    for k, curve in enumerate(panels):
        ax = fig.add_subplot(grid[k // 4, k % 4])
        for n in names:
            c = curves[n].get(curve.name)
            if c is not None:
                ax.plot(range(len(c)), c, families[n].line, color=colours[n], lw=1.4, label=n)
        ref = CURVES.get(curve.reference or "")
        if names and ref is not None and curves[names[0]].get(ref.name) is not None:
            c = curves[names[0]][ref.name]
            ax.plot(range(len(c)), c, ":", color="k", lw=2, label=ref.label)
        better = f"\n({curve.better} curve is better)" if curve.better else ""
        ax.set_title(f"{curve.label}{better}", fontsize=10)
        ax.set_xlabel(curve.axis)
        ax.set_ylabel("target logit")
        ax.grid(alpha=0.3)
    if positions:
        ax = fig.add_subplot(grid[len(panels) // 4, len(panels) % 4])
        if names:
            first = curves[names[0]]
            for curve in positions:
                if first.get(curve.name) is not None:
                    ax.plot(range(len(first[curve.name])), first[curve.name], curve.style, color="k", lw=1.8,
                            label=curve.label)
            ax.legend(fontsize=8)
        ax.set_title("frames removed by position (all methods)\n(lower curve: the frames matter more)", fontsize=10)
        ax.set_xlabel("frames removed")
        ax.set_ylabel("target logit")
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    if handles:
        fig.axes[0].legend(handles, labels, fontsize=7, ncol=2, loc="best")

    for k, score in enumerate(scores):
        ax = fig.add_subplot(grid[n_top_rows + k // 4, k % 4])
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
        ax.plot(range(len(y)), y, families[name].line, marker="o", ms=3, color=colours[name],
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
