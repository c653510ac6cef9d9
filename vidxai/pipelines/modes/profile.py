"""``mode=profile`` (``split=test`` alone, ``limit=N``): every video of a split explained with one rule, and
the temporal relevance profile (where in the clip the evidence sits) with bootstrap intervals:
``profile.json``, ``videos.json``, ``profile.png``. The videos are split over the trainer's processes
(``trainer=ddp_cpu``...); rank 0 gathers them in video order and writes every file."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from vidxai.io import write_json
from vidxai.pipelines._common import save_in_run
from vidxai.pipelines.evaluate import stopped
from vidxai.pipelines.modes.context import ExplainContext, ModeResult, pct
from vidxai.pipelines.progress import RunProgress
from vidxai.pipelines.sharded import PaddedShard, process_journal, resume_settings, stop_check
from vidxai.viz.media import save_figure
from vidxai.viz.profile import positive_mass, positive_share, profile_figure, temporal_profile
from vidxai.viz.report import profile_report
from vidxai.wandb_media import Html, Image, log_media

log = logging.getLogger(__name__)

__all__ = ["run", "summary_lines"]


def run(ctx: ExplainContext) -> ModeResult:
    """Explain the first ``limit`` videos of ``split`` (split over the trainer's processes) and write their
    temporal profile (rank 0)."""
    split = str(ctx.options.get("split") or "test")
    dataset = ctx.dataset(split)
    n = ctx.split_size(dataset, split)
    start = time.perf_counter()
    found = _explain_videos(ctx, dataset, n)
    if found is None:  # not rank 0: its videos went to rank 0
        return ModeResult("profile", {}, [])
    shares, labels, rows = found
    seconds = time.perf_counter() - start
    profile = ctx.options.profile
    labelled = [r for r in rows if r["label"] is not None]
    prof = temporal_profile(
        # clips of a pretrained= model's videos= without a class folder: no per-class profile
        shares, labels if len(labelled) == len(rows) else None, ctx.ck.class_names,
        # no more bins than frames per clip, so no bin is empty by construction
        n_bins=min(int(profile.n_bins), int(ctx.ck.preprocess["num_frames"])),
        n_boot=int(profile.n_boot), seed=int(ctx.options.get("seed", 0)),
    )
    prof.update({
        "split": split, "videos": n, "rule": ctx.lrp.rule, "lrp": ctx.lrp.to_dict(), "checkpoint": str(ctx.ck.path),
        "seconds": seconds,
    })
    if labelled:
        prof["accuracy"] = float(np.mean([r["label"] == r["prediction"] for r in labelled]))
    if len(labelled) < len(rows):
        prof["unlabelled"] = len(rows) - len(labelled)
    if ctx.pretrained:
        prof["source"] = f"videos={ctx.options.get('videos')}"
    write_json(ctx.out_dir / "profile.json", prof)
    write_json(ctx.out_dir / "videos.json", rows)
    lines = summary_lines(prof)
    _draw_and_log(ctx, prof, lines)
    return ModeResult("profile", prof, lines)


def _explain_videos(ctx: ExplainContext, dataset: Any, n: int
                    ) -> tuple[list[Any], list[int | None], list[dict[str, Any]]] | None:
    """Per video, in video order: its positive share per frame, its label (``None``: unknown) and its row of
    ``videos.json`` (on rank 0; ``None`` on the other ranks). Each process explains its share of the videos and
    writes each one to its journal (``journal/rank<r>.jsonl``) as soon as it is explained; with ``resume=`` the
    videos the journal holds are read back instead."""
    explainer = ctx.explainer()
    done: dict[int, tuple[Any, int, dict[str, Any]]] = {}
    state: dict[str, Any] = {}
    stop = stop_check(ctx.trainer)
    progress = RunProgress("videos")

    def step(i: int) -> None:
        if "journal" not in state:  # here: the process group is up, the journal is this rank's
            state["share"] = len(PaddedShard(n))
            state["journal"] = journal = process_journal(
                ctx.out_dir, {"settings": resume_settings(ctx.options, "profile"), "videos": n},
                resume=bool(ctx.options.get("resume")))
            for record in journal.of_kind("video"):
                label = None if record["label"] is None else int(record["label"])
                done[int(record["key"])] = (np.asarray(record["share"], dtype=np.float64), label, record["row"])
            state["count"] = len(done)
        stop()
        if i not in done:
            share, label, row = _explain_video(ctx, explainer, dataset, i)
            state["journal"].append({"kind": "video", "key": i, "share": share, "label": label, "row": row})
            done[i] = (share, label, row)
        state["count"] += 1
        progress.update("explaining", min(state["count"], state["share"]), state["share"])

    try:
        parts = ctx.shard(n, step, lambda: done)
    except (KeyboardInterrupt, SystemExit):
        progress.close()
        stopped(ctx.out_dir)
        raise
    progress.close()
    if parts is None:
        return None
    merged: dict[int, tuple[Any, int, dict[str, Any]]] = {}
    for part in parts:
        for i, item in part.items():
            merged.setdefault(i, item)  # a video a distributed sampler repeated counts once
    ordered = [merged[i] for i in sorted(merged)]
    return [o[0] for o in ordered], [o[1] for o in ordered], [o[2] for o in ordered]


def _explain_video(ctx: ExplainContext, explainer: Any, dataset: Any, i: int
                   ) -> tuple[Any, int | None, dict[str, Any]]:
    clip = ctx.clip(dataset, i)
    names = ctx.ck.class_names
    expl = explainer.explain(clip.video, target=ctx.target)
    logits = expl.logits.detach().cpu().double().numpy()
    share = positive_share(positive_mass(expl.pixel.detach().cpu().double().numpy()))
    row = {
        "video": clip.source,
        "label": None if clip.label is None else names[clip.label],
        "target": names[expl.target],
        "prediction": names[int(np.argmax(logits))],
        "frame_relevance": expl.frame.detach().cpu().double().numpy().tolist(),
        "frame_indices": clip.frame_indices,
    }
    return share, clip.label, row


def _draw_and_log(ctx: ExplainContext, prof: dict[str, Any], lines: list[str]) -> None:
    fig_path = ctx.out_dir / "profile.png"
    save_figure(profile_figure(prof), fig_path)
    report = profile_report(prof, ctx.out_dir, fig_path, lines)
    if ctx.run is not None:
        log_media(ctx.run, {"explain/profile": Image(fig_path), "explain/report": Html(report)})
        ctx.run.summary.update({k: v for k, v in prof.items() if isinstance(v, (int, float, str))})
        save_in_run(ctx.run, ctx.out_dir / "profile.json")


def summary_lines(prof: dict[str, Any]) -> list[str]:
    """The terminal summary of a temporal profile (from ``profile.json``'s dict; nothing is recomputed)."""
    overall = prof["overall"]["summary"]
    where = prof.get("source") or f"split {prof.get('split', '?')}"
    lines = [f"explained {prof.get('videos')} videos of {where} with rule {prof['rule']}"
             + (f"; accuracy {prof['accuracy']:.2f}" if "accuracy" in prof else "")
             + (f"; {prof['unlabelled']} without a label (target: the predicted class)" if prof.get("unlabelled")
                else "")]
    parts = [f"{pct(overall[k]['mean'])} {k.replace('_', ' ')} (uniform {pct(overall[k]['uniform'])})"
             for k in ("first_half", "second_half", "last_frame") if k in overall]
    lines.append("  mean positive relevance: " + ", ".join(parts))
    return lines
