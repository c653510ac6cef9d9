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


def _step_seconds(s: RunSummary, step: str) -> float | None:
    record = s.steps.get(step) or {}
    return record.get("seconds") if record.get("ok") else None


def _status(s: RunSummary) -> str:
    """``ok``, or what did not run or failed, step by step."""
    problems = [f"{k}: {v.get('error')}" for k, v in s.steps.items() if not v.get("ok")]
    return "ok" if not problems else "; ".join(problems).replace("|", "/")


def _summary_table(summaries: list[RunSummary]) -> list[str]:
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


def write_report(summaries: list[RunSummary], doc: Path, fig_dir: Path, extra: list[str] | None = None,
                 run_root: Path | None = None) -> Path:
    """Write ``doc`` (Markdown) and copy the figures into ``fig_dir``; returns ``doc``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    steps = [r for s in summaries for r in s.steps.values() if r.get("ok")]
    total = sum(float(r.get("seconds") or 0.0) for r in steps)
    loads = [r["load"] for r in steps if isinstance(r.get("load"), (int, float))]
    lines = ["# Results", "",
             "Generated by `make results` (`vidxai/pipelines/results.py`); do not edit by hand, run it again. "
             f"Written {time.strftime('%Y-%m-%d %H:%M')}" + (f" from `{run_root}`." if run_root else "."), ""]
    if extra:
        lines += [f"**Reduced or changed run**, extra overrides: `{' '.join(extra)}`. These numbers are not "
                  "the recipes' results.", ""]
    lines += [f"Time: {total / 60:.1f} min of training, evaluation and profiling, summed over the steps' wall "
              f"times (reused steps counted with the time they took), on {os.cpu_count()} CPU cores"
              + (f"; 1-minute load average at the steps' starts {min(loads):.1f}-{max(loads):.1f} (a load above "
                 "the core count means other work shared the CPUs)" if loads else "") + ".", "",
              *_summary_table(summaries), ""]
    for s in summaries:
        lines += _recipe_section(s, fig_dir, doc.parent)
    doc.write_text("\n".join(lines).rstrip() + "\n")
    return doc
