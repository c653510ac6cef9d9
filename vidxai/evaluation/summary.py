"""From per-video rows to the result of :func:`vidxai.evaluation.evaluate`: means, CIs, comparisons, verdicts.

Also the tables: :func:`summary_table` (one row per method, for the CSV-like W&B table) and
:func:`markdown_table` (``evaluation.md`` and the console: the per-method table, then per score its
direction, the best mean with its 95% CI and the methods tied with the best, then a plain verdict per
score family and the scores left out with the reason).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidxai.evaluation.curves import order_scores
from vidxai.evaluation.methods import family_of
from vidxai.evaluation.registry import METRICS, Metric
from vidxai.evaluation.stats import bootstrap_ci, compare_with_best, smallest_p, videos_needed

__all__ = ["aggregate", "markdown_table", "power", "separable", "summary_table", "verdict"]

_NEEDS = {
    "boxes": "the data records no actor boxes (``boxes`` in the videos' JSON)",
    "evidence": "the data records no temporal evidence (``evidence_frames`` in the videos' JSON)",
}
_ARROW = {"higher": "↑ higher is better", "lower": "↓ lower is better", "none": "diagnostic (ranks nothing)"}
_FAMILY_TITLES = {"power": "can these videos separate the methods?",
                  "perturbation": "perturbation (removing what the map ranks first)",
                  "ground_truth": "ground truth (actor box, evidence frames)",
                  "randomisation": "randomisation (does the map depend on the model?)",
                  "control": "control (input only)"}


def _values(rows: list[dict[str, Any]], videos: list[str], method: str, key: str) -> np.ndarray:
    at = {r["video"]: r.get(key) for r in rows if r["method"] == method}
    return np.array([np.nan if at.get(v) is None else float(at[v]) for v in videos], dtype=np.float64)


def _left_out(metric: Metric, ok: bool, s: Any, chance: float | None = None) -> str | None:
    if ok and metric.family == "ground_truth" and chance is not None and chance >= 1 - 1e-9:
        return ("the ground truth covers the whole clip on these videos (chance level 1.0): every map scores the "
                "same, so the score cannot rank the methods")
    if ok:
        return None
    if metric.needs in _NEEDS:
        return _NEEDS[metric.needs]
    if metric.family == "randomisation":
        if s.mprt_videos == 0 and s.randomisation_videos == 0:
            return "randomisation tests off (mprt.videos=0, mprt.final_videos=0)"
        if metric.name == "smprt" and s.smprt_samples == 0:
            return "sMPRT off (mprt.smprt_samples=0)"
    return "no method has a value for this score on these videos"


def _method_entry(name: str, per: dict[str, np.ndarray], rng: np.random.Generator, s: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    entry["ci"], entry["sem"] = {}, {}
    for key, v in per.items():
        f = v[np.isfinite(v)]
        entry[key] = float(f.mean()) if f.size else None
        entry["ci"][key] = list(bootstrap_ci(f, s.n_boot, rng)) if f.size > 1 else [None, None]
        entry["sem"][key] = float(f.std(ddof=1) / np.sqrt(f.size)) if f.size > 1 else None
    return entry


def _compare(per_method: dict[str, dict[str, np.ndarray]], chance_rows: list[dict[str, Any]], s: Any
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(metrics, comparisons, vs_random)``: each score's description, chance and best; the paired tests."""
    metrics, comparisons, vs_random = {}, {}, {}
    for k, (key, m) in enumerate(METRICS.items()):
        ok = any(np.isfinite(v[key]).any() for v in per_method.values())
        chance = [c.get(key) for c in chance_rows if c.get(key) is not None]
        metrics[key] = {"label": m.label, "direction": m.direction, "family": m.family,
                        "description": m.description, "chance": float(np.mean(chance)) if chance else None}
        reason = _left_out(m, ok, s, metrics[key]["chance"])
        if reason:
            metrics[key]["left_out"] = reason
            continue
        if m.higher_is_better is None:
            continue
        values = {n: per_method[n][key] for n in per_method}
        best, comparisons[key] = compare_with_best(values, m.higher_is_better, s.n_boot, [int(s.seed), k], s.alpha)
        metrics[key]["best"] = best
        ref = _reference(values)
        if ref is not None and best != ref:
            _, vs_random[key] = compare_with_best(values, m.higher_is_better, s.n_boot, [int(s.seed), k, 1],
                                                  s.alpha, against=ref)
    return metrics, comparisons, vs_random


def _reference(methods: Any, result: dict[str, Any] | None = None) -> str | None:
    """The random map among ``methods`` (names): the first method of a reference family
    (:class:`~vidxai.evaluation.registry.MethodFamily`), as the result records it or as it is registered."""
    entries = (result or {}).get("methods", {})
    return next((n for n in methods if family_of(n, (entries.get(n) or {}).get("family")).reference), None)


def aggregate(st: Any, names: list[str], info: dict[str, dict[str, Any]], skipped: dict[str, str],
              errors: dict[str, str], rand: dict[str, Any], s: Any, videos: list[str], shape: Sequence[int]
              ) -> dict[str, Any]:
    """The result dict (see :func:`vidxai.evaluation.evaluate`) from the per-video rows ``st.rows``; ``info``: each
    method's ``family`` and ``settings``; ``videos``: the sources in order; ``shape``: one clip's ``(T, C, H, W)``."""
    t0 = time.perf_counter()
    keys = list(METRICS)
    methods: dict[str, Any] = {}
    per_method: dict[str, dict[str, np.ndarray]] = {}
    rng = np.random.default_rng([int(s.seed), 99])
    for name in names:
        if name in skipped:
            methods[name] = {"skipped": True, "reason": skipped[name]}
            continue
        mine = [r for r in st.rows if r["method"] == name]
        if not mine:
            methods[name] = {"skipped": True, "error": errors.get(name, "no video was scored")}
            continue
        per_method[name] = {k: _values(st.rows, videos, name, k) for k in keys}
        entry = _method_entry(name, per_method[name], rng, s)
        entry.update({k: float(np.mean([r[k] for r in mine])) for k in order_scores().values()})  # references
        entry.update({"family": info[name]["family"], "mprt_spearman": rand["per_step"].get(name),
                      "time_s": st.times[name], "videos": len(mine), "settings": info[name]["settings"]})
        if name in errors:
            entry["error"] = errors[name]
        methods[name] = entry
    metrics, comparisons, vs_random = _compare(per_method, st.chance_rows, s)
    orders = {k: float(np.nanmean([r[k] for r in st.rows])) if st.rows else None for k in order_scores().values()}
    result = {
        "settings": {"videos": len(videos), "frames": int(shape[0]), "alpha": s.alpha,
                     "size": [int(n) for n in shape[-2:]],
                     "aopc": "mean over steps k=0..K of f(x) - f(x^(k)), f = target logit, step 0 = intact clip",
                     "ties": "broken by one seeded random order per video, shared by all methods",
                     "ground_truth_ties": "tied values scored by their expectation under a random tie-break",
                     "statistics": "paired bootstrap 95% CI and Wilcoxon signed-rank p, Holm-corrected, vs the "
                                   "best; the Wilcoxon test decides ties, the CIs show sizes",
                     "target": "predicted class" if s.target is None else int(s.target)},
        "metrics": metrics,
        "chance": {k: v["chance"] for k, v in metrics.items()},
        "ground_truth_videos": {k: sum(c.get(k) is not None for c in st.chance_rows)
                                for k, m in METRICS.items() if m.family == "ground_truth"},
        "methods": methods,
        "comparisons": comparisons,
        "vs_random": vs_random,
        "orders": orders,
        "curves": {n: {c: (v / sum(1 for r in st.rows if r["method"] == n)).tolist() for c, v in cs.items()}
                   for n, cs in st.curve_sums.items()},
        "mprt": {"steps": rand["steps"], "videos": min(rand["videos"], s.mprt_videos),
                 "final_videos": rand["videos"]},
        "timing": {"methods": {n: st.times[n] for n in names if n in per_method},
                   "methods_randomisation": rand.get("method_s", {}),
                   "tests": {"randomisation (MPRT, eMPRT)": rand["time_s"] - rand["smprt_s"],
                             "sMPRT": rand["smprt_s"]}},
        "rows": st.rows,
    }
    result["power"] = power(result)
    result["verdict"] = verdict(result)
    result["timing"]["tests"]["statistics"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------- text
def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _listing(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def power(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per ranked score: can its paired tests separate any method from the best at ``alpha``?

    ``n``: the videos the score was compared on (the most any method has; the randomisation scores use the
    first ``mprt.final_videos``), ``comparisons``: the methods compared with the best (Holm's family),
    ``smallest_p``: ``comparisons * 2 / 2**n``, the smallest Holm-adjusted p the exact two-sided Wilcoxon test
    can reach, ``needed``: the fewest videos with which it could go below ``alpha``, ``separable``: whether
    ``smallest_p < alpha``.
    """
    alpha = float(result["settings"].get("alpha", 0.05))
    out = {}
    for key, comp in result.get("comparisons", {}).items():
        if not comp:
            continue
        n = max(int(c.get("videos") or 0) for c in comp.values())
        m = max(1, len(comp) - 1)
        p = smallest_p(n, m)
        out[key] = {"n": n, "comparisons": m, "smallest_p": p, "needed": videos_needed(m, alpha),
                    "separable": p < alpha, "alpha": alpha}
    return out


def _power_lines(result: dict[str, Any], pw: dict[str, dict[str, Any]]) -> list[str]:
    """The verdict's first lines: which scores these videos cannot decide, why, and how many would."""
    weak = {k: v for k, v in pw.items() if not v["separable"]}
    if not weak:
        return []
    labels = [result["metrics"][k]["label"] for k in weak]
    lines = []
    for (n, m), keys in _group(weak).items():
        v = weak[keys[0]]
        rand = all(result["metrics"][k]["family"] == "randomisation" for k in keys)
        how = (f"mprt.final_videos={v['needed']}" + ("" if n >= v["needed"] else f" and limit>={v['needed']}")
               if rand else f"limit={v['needed']}")
        lines.append(
            f"Too few videos to separate the methods on {_listing([result['metrics'][k]['label'] for k in keys], 3)}: "
            f"with n={n} videos the exact two-sided Wilcoxon signed-rank test cannot give a p below 2/2^{n} = "
            f"{2 / 2 ** n:.3g}, and Holm's correction over {m} comparisons makes that {v['smallest_p']:.3g} >= "
            f"alpha={v['alpha']:g}: no method can differ from the best or from random here, whatever the maps. "
            f"{how} could (with {m} comparisons at alpha={v['alpha']:g}); so could fewer methods (methods=[...]).")
    if len(labels) < len(pw):
        lines.append("The other scores can separate methods on these videos.")
    lines.append("The bootstrap 95% CIs show how large a difference is; only the Wilcoxon test (Holm-corrected) "
                 "decides ties and 'not distinguishable from random'.")
    return lines


def _group(weak: dict[str, dict[str, Any]]) -> dict[tuple[int, int], list[str]]:
    groups: dict[tuple[int, int], list[str]] = {}
    for key, v in weak.items():
        groups.setdefault((v["n"], v["comparisons"]), []).append(key)
    return groups


def verdict(result: dict[str, Any]) -> dict[str, list[str]]:
    """Plain lines, grouped by family: first (``power``) the scores these videos are too few to decide, then per
    ranked score the best, the methods tied with it and those not better than random."""
    out: dict[str, list[str]] = {}
    pw = result.get("power") or power(result)
    first = _power_lines(result, pw)
    if first:
        out["power"] = first
    alpha = result["settings"].get("alpha", 0.05)
    for key, m in result["metrics"].items():
        if "left_out" in m or key not in result["comparisons"]:
            continue
        comp = result["comparisons"][key]
        n = pw.get(key, {}).get("n", result["settings"]["videos"])
        best = m["best"]
        ref = _reference(result["methods"], result)
        mean = result["methods"].get(best, {}).get(key)
        if key in pw and not pw[key]["separable"]:
            line = (f"{m['label']}: too few videos (n={n}, needs {pw[key]['needed']}) to rank the methods; "
                    f"{'the random map' if best == ref else best} has the best mean ({_fmt(mean)}), not a finding")
            out.setdefault(m["family"], []).append(line)
            continue
        tied = [x for x, c in comp.items() if c["tied_with_best"]]
        if best == ref:
            line = (f"{m['label']}: no method beats the random map on these {n} videos ({ref} has the best mean); "
                    f"not worse than random: {_listing([x for x in tied if x != best])}")
        else:
            line = f"{m['label']}: {best} best; tied with it: {_listing([x for x in tied if x != best])}"
        rnd = result["vs_random"].get(key)
        if rnd:  # no significant difference from random, in either direction
            weak = [x for x, c in rnd.items() if x != ref and (c["p"] is None or c["p"] >= alpha)]
            line += f"; not distinguishable from random on these {n} videos: {_listing(weak)}"
        out.setdefault(m["family"], []).append(line)
    return out


def summary_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)``: one row per method with its mean scores (``None`` where absent), errors last."""
    keys = [k for k, m in result["metrics"].items() if "left_out" not in m]
    columns = ["method", *keys, "time_s", "error"]
    rows = []
    for name, m in result["methods"].items():
        error = m.get("error") or (f"skipped: {m['reason']}" if m.get("reason") else None)
        rows.append([name, *(m.get(k) for k in keys), m.get("time_s"), error])
    return columns, rows


def _cell(result: dict[str, Any], name: str, key: str) -> str:
    m = result["methods"][name]
    value, ci = m.get(key), (m.get("ci") or {}).get(key) or [None, None]
    if value is None:
        return "–"
    text = _fmt(value) + (f" ± {(ci[1] - ci[0]) / 2:.3f}" if ci[0] is not None else "")
    comp = result["comparisons"].get(key, {}).get(name)
    if not separable(result, key):
        return text
    return f"**{text}**" if comp and comp["tied_with_best"] else text


def separable(result: dict[str, Any], key: str) -> bool:
    """Whether the videos of score ``key`` are enough for its paired tests to separate any two methods."""
    pw = (result.get("power") or power(result)).get(key)
    return pw is None or bool(pw["separable"])


def markdown_table(result: dict[str, Any]) -> str:
    """``evaluation.md``: the method table (bold: tied with the best), the score summary, verdicts, left out."""
    metrics = result["metrics"]
    keys = [k for k, m in metrics.items() if "left_out" not in m]
    arrows = {"higher": "↑", "lower": "↓", "none": "·"}
    first = _power_lines(result, result.get("power") or power(result))
    lines = [f"**{first[0]}**", ""] if first else []
    lines += ["| method | " + " | ".join(f"{k} {arrows[metrics[k]['direction']]}" for k in keys) + " | time (s) |",
             "|" + "---|" * (len(keys) + 2)]
    for name, m in result["methods"].items():
        if m.get("skipped"):
            lines.append(f"| {name} | skipped: {m.get('reason') or m.get('error')} |")
            continue
        cells = " | ".join(_cell(result, name, k) for k in keys)
        lines.append(f"| {name} | {cells} | {_fmt(m.get('time_s'), 1)} |")
    lines.append("| chance | " + " | ".join(_fmt(metrics[k]["chance"]) for k in keys) + " | |")
    alpha = result["settings"].get("alpha", 0.05)
    lines += ["", "Means ± half the 95% bootstrap CI over videos; **bold**: not significantly worse than the best "
              f"(paired Wilcoxon signed-rank, Holm-corrected, p < {alpha:g}); no bold in a column whose videos are "
              "too few for that test to separate any two methods (see the verdict).", "",
              "| score | direction | best: mean [95% CI] | tied with the best |", "|---|---|---|---|"]
    for k in keys:
        m = metrics[k]
        if "best" not in m:
            lines.append(f"| {m['label']} | {_ARROW[m['direction']]} | – | – |")
            continue
        b = result["methods"][m["best"]]
        ci = b["ci"].get(k) or [None, None]
        tied = [x for x, c in result["comparisons"][k].items() if c["tied_with_best"] and x != m["best"]]
        pw = (result.get("power") or power(result)).get(k)
        ties = _listing(tied, 20) if separable(result, k) else \
            f"too few videos (n={pw['n']}; needs {pw['needed']})"
        lines.append(f"| {m['label']} | {_ARROW[m['direction']]} | {m['best']}: {_fmt(b[k])} "
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {ties} |")
    lines += ["", "**Verdict**", ""]
    for family, items in result["verdict"].items():
        lines.append(f"- {_FAMILY_TITLES.get(family, family)}:")
        lines += [f"  - {item}" for item in items]
    gone = {k: m["left_out"] for k, m in metrics.items() if "left_out" in m}
    if gone:
        lines += ["", "Left out: " + "; ".join(f"{metrics[k]['label']} ({why})" for k, why in gone.items())]
    return "\n".join(lines)
