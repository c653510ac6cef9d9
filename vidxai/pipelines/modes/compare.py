"""``mode=compare`` (``compare=[z,epsilon,...]``): one video explained with every listed rule, drawn side by side
on the same frames (``compare.png``), plus the single-video files of the main rule (``rule=``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vidxai.errors import UserError
from vidxai.io import write_json
from vidxai.pipelines._common import to_plain
from vidxai.pipelines.modes.context import ExplainContext, ModeResult
from vidxai.pipelines.modes.single import explain_clip, log_run, pick_clip, summary_lines, write_report
from vidxai.viz.heatmaps import rule_comparison_figure
from vidxai.viz.media import save_figure
from vidxai.xai.rules import RULES, get_rule

__all__ = ["comparison_frames", "compare_rules", "run"]


def compare_rules(options: Any) -> list[str]:
    """The rules of ``compare=``, checked against the rule registry; every registered rule when not given."""
    names = to_plain(options.get("compare"))
    if names is None:
        return list(RULES)
    names = [names] if isinstance(names, str) else [str(n) for n in names]
    if not names:
        raise UserError("compare=[] names no rule; pass compare=[z,epsilon,...] or drop mode=compare")
    for name in names:
        try:
            get_rule(name)
        except ValueError as exc:
            raise UserError(f"compare=: {exc}") from None
    return names


def run(ctx: ExplainContext) -> ModeResult:
    """Explain the chosen clip with the main rule and with each compared rule; write ``compare.png``."""
    rules = compare_rules(ctx.options)
    done = explain_clip(ctx, pick_clip(ctx))
    clip, target = done.clip, done.explanation.target
    relevances = {
        name: ctx.explainer(ctx.lrp.with_rule(name)).explain(clip.video, target=target)
        .pixel.detach().cpu().float().numpy()
        for name in rules
    }
    peaks = [p["clip_frame"] for p in done.summary["peak_frames"]]
    cols = comparison_frames(len(clip.frame_indices), peaks)
    fig = rule_comparison_figure(clip.frames, relevances, cols, frame_indices=clip.frame_indices)
    done.figures["compare"] = save_figure(fig, ctx.out_dir / "compare.png") or ctx.out_dir / "compare.png"
    done.summary["compare"] = {"rules": rules, "frames": [clip.frame_indices[c] for c in cols]}
    write_json(ctx.out_dir / "summary.json", done.summary)
    name = Path(clip.source).name
    what = (f"compared rules {', '.join(rules)} on {name} (compare.png); heatmaps, curve and peaks with rule "
            f"{ctx.lrp.rule}")
    lines = summary_lines(done.summary, what)
    write_report(ctx, done, lines)
    log_run(ctx, done)
    return ModeResult("compare", done.summary, lines)


def comparison_frames(t: int, peaks: list[int], most: int = 8) -> list[int]:
    """Frames for the rule comparison: every frame of short clips, else the peaks plus evenly spaced ones."""
    if t <= most:
        return list(range(t))
    chosen = set(peaks[: most // 2]) | {t - 1}
    for i in np.linspace(0, t - 1, most).round().astype(int):
        if len(chosen) >= most:
            break
        chosen.add(int(i))
    return sorted(chosen)
