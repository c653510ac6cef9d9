"""``mode=profile`` (``split=test`` alone, ``limit=N``): every video of a split explained with one rule, and
the temporal relevance profile (where in the clip the evidence sits) with bootstrap intervals:
``profile.json``, ``videos.json``, ``profile.png``."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from vidxai.io import write_json
from vidxai.pipelines._common import save_in_run
from vidxai.pipelines.modes.context import ExplainContext, ModeResult, pct

log = logging.getLogger(__name__)

__all__ = ["run", "summary_lines"]


def run(ctx: ExplainContext) -> ModeResult:
    """Explain the first ``limit`` videos of ``split`` and write their temporal profile."""
    from vidxai.viz.profile import temporal_profile

    split = str(ctx.options.get("split") or "test")
    dataset = ctx.dataset(split)
    n = ctx.split_size(dataset, split)
    start = time.perf_counter()
    shares, labels, rows = _explain_videos(ctx, dataset, n)
    seconds = time.perf_counter() - start
    profile = ctx.options.profile
    prof = temporal_profile(
        shares, labels, ctx.ck.class_names,
        # no more bins than frames per clip, so no bin is empty by construction
        n_bins=min(int(profile.n_bins), int(ctx.ck.preprocess["num_frames"])),
        n_boot=int(profile.n_boot), seed=int(ctx.options.get("seed", 0)),
    )
    prof.update({
        "split": split, "videos": n, "rule": ctx.lrp.rule, "lrp": ctx.lrp.to_dict(), "checkpoint": str(ctx.ck.path),
        "seconds": seconds, "accuracy": float(np.mean([r["label"] == r["prediction"] for r in rows])),
    })
    write_json(ctx.out_dir / "profile.json", prof)
    write_json(ctx.out_dir / "videos.json", rows)
    _draw_and_log(ctx, prof)
    return ModeResult("profile", prof, summary_lines(prof))


def _explain_videos(ctx: ExplainContext, dataset: Any, n: int) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """Per video: its positive share per frame, its label and its row of ``videos.json``."""
    from vidxai.viz.profile import positive_mass, positive_share

    explainer = ctx.explainer()
    names = ctx.ck.class_names
    shares, labels, rows = [], [], []
    for i in range(n):
        clip = ctx.clip(dataset, i)
        expl = explainer.explain(clip.video, target=ctx.target)
        logits = expl.logits.detach().cpu().double().numpy()
        shares.append(positive_share(positive_mass(expl.pixel.detach().cpu().double().numpy())))
        labels.append(int(clip.label))
        rows.append({
            "video": clip.source,
            "label": names[clip.label],
            "target": names[expl.target],
            "prediction": names[int(np.argmax(logits))],
            "frame_relevance": expl.frame.detach().cpu().double().numpy().tolist(),
            "frame_indices": clip.frame_indices,
        })
        if (i + 1) % 10 == 0:
            log.info("explained %d/%d videos", i + 1, n)
    return shares, labels, rows


def _draw_and_log(ctx: ExplainContext, prof: dict[str, Any]) -> None:
    from vidxai.viz.media import save_figure
    from vidxai.viz.profile import profile_figure

    fig_path = ctx.out_dir / "profile.png"
    save_figure(profile_figure(prof), fig_path)
    if ctx.run is not None:
        from vidxai.wandb_media import Image, log_media

        log_media(ctx.run, {"explain/profile": Image(fig_path)})
        ctx.run.summary.update({k: v for k, v in prof.items() if isinstance(v, (int, float, str))})
        save_in_run(ctx.run, ctx.out_dir / "profile.json")


def summary_lines(prof: dict[str, Any]) -> list[str]:
    """The terminal summary of a temporal profile (from ``profile.json``'s dict; nothing is recomputed)."""
    overall = prof["overall"]["summary"]
    lines = [f"explained {prof.get('videos')} videos of split {prof.get('split', '?')} with rule {prof['rule']}"
             + (f"; accuracy {prof['accuracy']:.2f}" if "accuracy" in prof else "")]
    parts = [f"{pct(overall[k]['mean'])} {k.replace('_', ' ')} (uniform {pct(overall[k]['uniform'])})"
             for k in ("first_half", "second_half", "last_frame") if k in overall]
    lines.append("  mean positive relevance: " + ", ".join(parts))
    return lines
