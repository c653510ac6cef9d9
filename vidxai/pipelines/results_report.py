"""The document ``make results`` writes: read what each run folder holds (defensively) and write Markdown.

Nothing here trains or explains; it reads ``train/csv/**/metrics.csv``, ``train/checkpoints/best.ckpt``,
``evaluate/evaluation.{md,json,png}`` and ``profile/profile.{json,png}`` of each run, whatever of them exists,
so the evaluation format can grow (confidence intervals, verdicts) without breaking the report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIN_METRICS = ("test/acc", "test/f1", "val/acc_best")


@dataclass
class RunSummary:
    """What the report says about one recipe."""

    name: str
    group: str
    overrides: str
    run_dir: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    best_checkpoint: str | None = None
    evaluation_md: str | None = None
    evaluation: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    figures: dict[str, Path] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train_metrics(train_dir: Path) -> tuple[dict[str, float], int | None]:
    """The last logged value of each metric in the run's CSV logs (resumed parts included) and the epochs run."""
    values: dict[str, float] = {}
    epochs = None
    files = sorted(train_dir.glob("csv/**/metrics.csv"), key=lambda p: p.stat().st_mtime_ns)
    for file in files:
        with open(file, newline="") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    try:
                        number = float(value)
                    except (TypeError, ValueError):
                        continue
                    values[key] = number
                if row.get("val/acc") not in (None, ""):
                    epochs = int(float(row.get("epoch") or 0)) + 1
    return values, epochs


def summarise_run(name: str, group: str, overrides: str, run_dir: Path,
                  steps: dict[str, dict[str, Any]]) -> RunSummary:
    """Collect what exists in ``run_dir``; missing pieces stay ``None``."""
    s = RunSummary(name, group, overrides, run_dir, steps)
    s.metrics, s.epochs = train_metrics(run_dir / "train")
    best = run_dir / "train" / "checkpoints" / "best.ckpt"
    if best.exists():
        s.best_checkpoint = best.resolve().name
    ev = run_dir / "evaluate"
    if (ev / "evaluation.md").is_file():
        s.evaluation_md = (ev / "evaluation.md").read_text().strip()
    s.evaluation = _read_json(ev / "evaluation.json")
    s.profile = _read_json(run_dir / "profile" / "profile.json")
    for folder, prefix in ((ev, ""), (run_dir / "profile", ""), (run_dir / "train" / "figures", "test_")):
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            s.figures[prefix + png.stem] = png
    return s


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def evaluation_table(result: dict[str, Any]) -> str:
    """A method x score table from ``evaluation.json`` alone: every scalar number a method entry holds."""
    methods = result.get("methods") if isinstance(result, dict) else None
    if not isinstance(methods, dict) or not methods:
        return "_evaluation.json has no methods._"
    columns: list[str] = []
    for entry in methods.values():
        for key, value in (entry or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in columns:
                columns.append(key)
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, entry in methods.items():
        entry = entry or {}
        if entry.get("error") and not any(isinstance(entry.get(c), (int, float)) for c in columns):
            lines.append(f"| {name} | failed: {entry['error']} |")
            continue
        lines.append(f"| {name} | " + " | ".join(_fmt(entry.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _demote(markdown: str) -> str:
    """Headings of an embedded document two levels down (they sit under a recipe's own heading)."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    summary = (profile.get("overall") or {}).get("summary") or {}
    lines = []
    for part in ("first_half", "second_half", "last_frame"):
        p = summary.get(part)
        if isinstance(p, dict):
            lines.append(f"| {part.replace('_', ' ')} | {_fmt(p.get('mean'))} | [{_fmt(p.get('lo'))}, "
                         f"{_fmt(p.get('hi'))}] | {_fmt(p.get('uniform'))} |")
    if not lines:
        return ["_profile.json has no overall summary._"]
    head = [f"Share of positive relevance by time over {profile.get('videos', '?')} test videos "
            f"(rule {profile.get('rule', '?')}; accuracy on them {_fmt(profile.get('accuracy'))}):", "",
            "| part of the clip | mean share | 95% CI | uniform |", "|---|---|---|---|"]
    return head + lines


def _share(summary: dict[str, Any], part: str) -> str:
    p = summary.get(part)
    if not isinstance(p, dict):
        return "–"
    return f"{_fmt(p.get('mean'), 2)} [{_fmt(p.get('lo'), 2)}, {_fmt(p.get('hi'), 2)}]"


def profile_table(summaries: list[RunSummary]) -> list[str]:
    """One row per recipe with a profile: where the positive relevance sits in time (mean share [95% CI])."""
    lines = ["| recipe | data | test accuracy | rule | first half | second half | last frame | uniform (last frame) |",
             "|---|---|---|---|---|---|---|---|"]
    rows = 0
    for s in summaries:
        summary = ((s.profile or {}).get("overall") or {}).get("summary") or {}
        if not summary:
            continue
        rows += 1
        uniform = (summary.get("last_frame") or {}).get("uniform")
        lines.append(f"| {s.name} | {s.group.split(' (')[0]} | {_fmt(s.metrics.get('test/acc'), 2)} | "
                     f"{s.profile.get('rule', '?')} | " + " | ".join(_share(summary, k) for k in
                                                                  ("first_half", "second_half", "last_frame"))
                     + f" | {_fmt(uniform, 3)} |")
    return lines if rows else ["_no profile yet_"]


def _focus(attention: bool) -> tuple[str, ...]:
    """The methods the README compares: the recommended set of the evaluation (its default), without the
    references (the random map: a family registered with ``reference=True``)."""
    from vidxai.evaluation.methods import RECOMMENDED, RECOMMENDED_ATTENTION, family_of

    return tuple(n for n in (RECOMMENDED_ATTENTION if attention else RECOMMENDED) if not family_of(n).reference)


_ARROW = {"higher": "↑", "lower": "↓"}


def _focus_cell(result: dict[str, Any], score: str, method: str) -> str:
    entry = (result.get("methods") or {}).get(method) or {}
    value = entry.get(score)
    if not isinstance(value, (int, float)):
        return "–"
    best = (result.get("metrics") or {}).get(score, {}).get("best")
    cmp = ((result.get("comparisons") or {}).get(score) or {}).get(method) or {}
    if method == best:
        return f"**{value:.3f}** (best)"
    text = f"{value:.3f} ({cmp['diff']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}])" if "diff" in cmp else (
        f"{value:.3f}")
    return f"**{text}**" if cmp.get("tied_with_best") else text


def focus_table(result: dict[str, Any], methods: tuple[str, ...]) -> list[str]:
    """Score x method: mean, and difference to the best method with its paired 95% CI; bold = tied with the best.

    Only scores that rank methods (a direction) and were computed; the best is over every method evaluated,
    not only the columns shown.
    """
    shown = [m for m in methods if m in (result.get("methods") or {})]
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if v.get("direction") in _ARROW}
    rows = [k for k in metrics if any(isinstance(((result.get("methods") or {}).get(m) or {}).get(k), (int, float))
                                      for m in shown)]
    if not shown or not rows:
        return ["_no evaluation yet_"]
    from vidxai.evaluation.methods import method_label

    entries = result.get("methods") or {}
    lines = ["| score | best of all methods | " + " | ".join(method_label(m, entries[m].get("settings"))
                                                             for m in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for k in rows:
        m = metrics[k]
        best = m.get("best")
        best_value = ((result.get("methods") or {}).get(best) or {}).get(k)
        head = f"{best} {best_value:.3f}" if isinstance(best_value, (int, float)) else "–"
        lines.append(f"| {m.get('label', k)} {_ARROW[m['direction']]} | {head} | "
                     + " | ".join(_focus_cell(result, k, x) for x in shown) + " |")
    settings = result.get("settings") or {}
    videos, rand = settings.get("videos", "?"), settings.get("randomisation_videos")
    over = f"{videos} test videos" + (f" (MPRT and eMPRT: the first {rand})" if rand and rand != videos else "")
    return lines + ["", f"Mean over {over}; in brackets the difference to the best method with its "
                        "paired bootstrap 95% CI; **bold**: best or not significantly worse than the best (Wilcoxon, "
                        "Holm-corrected, p < 0.05)."]


def _focus_methods(result: dict[str, Any]) -> tuple[str, ...]:
    from vidxai.evaluation.methods import on_attention

    return _focus(on_attention(result.get("methods") or {}))


def readme_block(summaries: list[RunSummary], doc_link: str) -> str:
    """The README's generated summary: recipes, the temporal profiles, the events models' method comparison."""
    out = [f"Generated by `make results` ({time.strftime('%Y-%m-%d')}); every number and the full tables, figures "
           f"and verdicts: [{doc_link}]({doc_link}).", "", _time_line(summaries), "",
           *_summary_table(summaries, short=True), "",
           "Where the positive relevance sits in time (epsilon rule, test split; share of the clip's positive "
           "relevance, 95% CI over videos):", "", *profile_table(summaries)]
    for s in summaries:
        if s.evaluation and s.group.startswith("events"):
            out += ["", f"**{s.name}** (test accuracy {_fmt(s.metrics.get('test/acc'), 2)}): selected methods "
                    f"(every method: [{doc_link}]({doc_link}#{s.name}))", "",
                    *focus_table(s.evaluation, _focus_methods(s.evaluation))]
    return "\n".join(out)


README_BEGIN = "<!-- results:begin (generated by make results; do not edit) -->"
README_END = "<!-- results:end -->"


def update_readme(readme: Path, block: str) -> bool:
    """Replace the text between the README's results markers by ``block``; ``False`` when the markers are missing."""
    text = readme.read_text() if readme.is_file() else ""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[:start + len(README_BEGIN)] + "\n" + block.strip() + "\n" + text[end:])
    return True


def _step_seconds(s: RunSummary, step: str) -> float | None:
    record = s.steps.get(step) or {}
    return record.get("seconds") if record.get("ok") else None


def _status(s: RunSummary) -> str:
    """``ok``, or what did not run or failed, step by step."""
    problems = [f"{k}: {v.get('error')}" for k, v in s.steps.items() if not v.get("ok")]
    return "ok" if not problems else "; ".join(problems).replace("|", "/")


def _summary_table(summaries: list[RunSummary], short: bool = False) -> list[str]:
    if short:
        lines = ["| recipe | test accuracy | epochs | train s | status |", "|---|---|---|---|---|"]
        return lines + [f"| `python train.py {s.overrides}` | {_fmt(s.metrics.get('test/acc'), 2)} | "
                        f"{_fmt(s.epochs)} | {_fmt(_step_seconds(s, 'train'), 0)} | {_status(s)} |" for s in summaries]
    lines = ["| recipe | data | test accuracy | test macro F1 | best val accuracy | epochs | best checkpoint | "
             "train s | evaluate s | profile s | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.name} (`{s.overrides}`) | {s.group} | {_fmt(s.metrics.get('test/acc'), 2)} | "
                     f"{_fmt(s.metrics.get('test/f1'), 2)} | {_fmt(s.metrics.get('val/acc_best'), 2)} | "
                     f"{_fmt(s.epochs)} | {s.best_checkpoint or '–'} | "
                     + " | ".join(_fmt(_step_seconds(s, k), 0) for k in ("train", "evaluate", "profile"))
                     + f" | {_status(s)} |")
    return lines


def _copy_figures(s: RunSummary, fig_dir: Path, doc_dir: Path) -> dict[str, str]:
    links = {}
    for key, src in s.figures.items():
        dst = fig_dir / s.name / f"{key}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        links[key] = os.path.relpath(dst, doc_dir)
    return links


def _recipe_section(s: RunSummary, fig_dir: Path, doc_dir: Path) -> list[str]:
    links = _copy_figures(s, fig_dir, doc_dir)
    where = os.path.relpath(s.run_dir, doc_dir.parent) if s.run_dir.is_absolute() else s.run_dir
    out = [f"## {s.name}", "", f"`python train.py {s.overrides}`; tested checkpoint: {s.best_checkpoint or '–'}; "
           f"run folder `{where}`.", ""]
    for step, record in s.steps.items():
        if not record.get("ok"):
            out += [f"- {step}: {record.get('error')}"]
    out += ["", "### Explanation evaluation (`explain.py ckpt=... evaluate=true split=test`)", ""]
    if s.evaluation:
        out += ["Selected methods, with the difference to the best method:", "",
                *focus_table(s.evaluation, _focus_methods(s.evaluation)), "", "Every method:", ""]
    if s.evaluation_md:
        out.append(_demote(s.evaluation_md))
    elif s.evaluation is not None:
        out.append(evaluation_table(s.evaluation))
    else:
        out.append("_no evaluation_")
    out += [f"\n![{k}]({v})" for k, v in links.items() if not k.startswith(("profile", "test_"))]
    out += ["", "### Temporal profile (`explain.py ckpt=... split=test`)", ""]
    out += _profile_lines(s.profile) if s.profile else ["_no profile_"]
    out += [f"\n![{k}]({v})" for k, v in links.items() if k.startswith("profile")]
    test_figs = [f"![{k}]({v})" for k, v in links.items() if k.startswith("test_")]
    if test_figs:
        out += ["", "### Test set (training run)", "", " ".join(test_figs)]
    return out + [""]


def _time_line(summaries: list[RunSummary]) -> str:
    """How long the steps took (summed wall times) and how busy the machine was when they started."""
    steps = [r for s in summaries for r in s.steps.values() if r.get("ok")]
    total = sum(float(r.get("seconds") or 0.0) for r in steps)
    loads = [r["load"] for r in steps if isinstance(r.get("load"), (int, float))]
    return (f"Time: {total / 60:.1f} min of training, evaluation and profiling, summed over the steps' wall "
            f"times (reused steps counted with the time they took), on {os.cpu_count()} CPU cores"
            + (f"; 1-minute load average at the steps' starts {min(loads):.1f}-{max(loads):.1f} (a load above "
               "the core count means other work shared the CPUs)" if loads else "") + ".")


def write_report(summaries: list[RunSummary], doc: Path, fig_dir: Path, extra: list[str] | None = None,
                 run_root: Path | None = None) -> Path:
    """Write ``doc`` (Markdown) and copy the figures into ``fig_dir``; returns ``doc``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Results", "",
             "Generated by `make results` (`vidxai/pipelines/results.py`); do not edit by hand, run it again. "
             f"Written {time.strftime('%Y-%m-%d %H:%M')}" + (f" from `{run_root}`." if run_root else "."), ""]
    if extra:
        lines += [f"**Reduced or changed run**, extra overrides: `{' '.join(extra)}`. These numbers are not "
                  "the recipes' results.", ""]
    lines += [_time_line(summaries), "", *_summary_table(summaries), "",
              "## Temporal profiles of all recipes", "", *profile_table(summaries), ""]
    for s in summaries:
        lines += _recipe_section(s, fig_dir, doc.parent)
    doc.write_text("\n".join(lines).rstrip() + "\n")
    return doc
