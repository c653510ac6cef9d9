"""``mode=single``: explain one video (``video=PATH``, or ``split=``/``index=``/``class=`` of the checkpoint's
data) with one rule; writes the heatmap grid, relevance curve, peak frames, overlay, ``relevance.npz`` and
``summary.json``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidxai.data.input_stats import compare_with_training
from vidxai.errors import UserError
from vidxai.io import write_json
from vidxai.pipelines._common import save_in_run
from vidxai.pipelines.modes.context import Clip, ExplainContext, ModeResult, class_index, pct
from vidxai.viz.explanation import render_explanation
from vidxai.viz.profile import positive_mass, positive_share, temporal_shares
from vidxai.viz.report import explanation_report
from vidxai.wandb_media import Html, Image, Video, log_media

__all__ = ["Explained", "explain_clip", "near_chance", "pick_clip", "relevance_summary", "run", "summary_lines",
           "write_report"]


@dataclass
class Explained:
    """One clip explained and drawn: the clip, the explanation, its summary and the figures written."""

    clip: Clip
    explanation: Any
    summary: dict[str, Any]
    figures: dict[str, Path]
    gif: Path | None


def run(ctx: ExplainContext) -> ModeResult:
    """Explain the chosen clip with ``ctx.lrp`` and write its files and summary."""
    done = explain_clip(ctx, pick_clip(ctx))
    write_json(ctx.out_dir / "summary.json", done.summary)
    lines = summary_lines(done.summary)
    write_report(ctx, done, lines)
    log_run(ctx, done)
    return ModeResult("single", done.summary, lines)


def write_report(ctx: ExplainContext, done: Explained, lines: list[str]) -> None:
    """``report.html``: the overlay, the curve with its peaks, the peak frames, the top-k predictions."""
    done.figures["report"] = explanation_report(done.summary, ctx.out_dir, done.figures, done.gif, lines,
                                                top_k=max(int(ctx.options.get("top_k", 3)), 5))


def pick_clip(ctx: ExplainContext) -> Clip:
    """The clip of ``video=``, else video ``index`` (of class ``class``) of the checkpoint's ``split``."""
    if ctx.options.get("video") is not None:
        return ctx.clip_from_file(str(ctx.options.video))
    split = str(ctx.options.get("split") or "val")
    dataset = ctx.dataset(split)
    if len(dataset) == 0:
        raise UserError(f"split={split} of the checkpoint's data is empty; choose split=val|test|train or video=PATH")
    candidates = list(range(len(dataset)))
    what = f"split={split} has {len(dataset)} videos"
    cls = ctx.options.get("class")
    if cls is not None:
        label = class_index(cls, ctx.ck.class_names, key="class")
        candidates = [i for i, e in enumerate(dataset.entries) if int(e.record.label) == label]
        if not candidates:
            raise UserError(f"split={split} has no video of class {ctx.ck.class_names[label]!r}; try another split=")
        what = f"split={split} has {len(candidates)} videos of class {ctx.ck.class_names[label]!r}"
    k = int(ctx.options.get("index") or 0)
    if not 0 <= k < len(candidates):
        raise UserError(f"index={k} out of range: {what} (0..{len(candidates) - 1})")
    return ctx.clip(dataset, candidates[k])


def explain_clip(ctx: ExplainContext, clip: Clip) -> Explained:
    """Explain ``clip`` with ``ctx.lrp``, draw it and save ``relevance.npz``; the summary is not written yet."""
    explainer = ctx.explainer()
    start = time.perf_counter()
    expl = explainer.explain(clip.video, target=ctx.target)
    seconds = time.perf_counter() - start
    e = expl.to_numpy()
    names = ctx.ck.class_names
    pred = int(np.argmax(e["logits"]))
    true = f" · true {names[clip.label]}" if clip.label is not None else ""
    title = f"{Path(clip.source).name} · {ctx.lrp.rule} · target {names[expl.target]} · pred {names[pred]}{true}"
    files = render_explanation(ctx.out_dir, clip.frames, e["pixel"], frame_indices=clip.frame_indices, fps=clip.fps,
                               title=title, top_k=int(ctx.options.get("top_k", 3)),
                               scale=str(ctx.options.get("scale", "video")))
    np.savez_compressed(ctx.out_dir / "relevance.npz", pixel=e["pixel"], frame=e["frame"], feature=e["feature"],
                        logits=e["logits"], target=np.int64(expl.target), class_names=np.array(names),
                        frame_indices=np.array(clip.frame_indices, dtype=np.int64), frames=clip.frames)
    summary = relevance_summary(e["pixel"], e["logits"], expl.target, names, clip.label, files.peaks,
                                clip.frame_indices)
    summary.update({
        "video": clip.source,
        "checkpoint": str(ctx.ck.path),
        **({"pretrained": ctx.ck.source, "model": ctx.ck.arch} if ctx.pretrained else {}),
        "rule": ctx.lrp.rule,
        "rule_params": dict(expl.params),
        "lrp": ctx.lrp.to_dict(),
        "recurrent_params": {"lstm_eps": explainer.lstm_eps, "bias_factor": explainer.bias_factor,
                             "lstm_rule": explainer.lstm_rule},
        "seconds": seconds,
        "fps": clip.fps,
        # total input relevance vs the target logit (conservative rules: delta ~ 0 up to biases)
        "conservation": {"total": expl.total(), "target_logit": float(e["logits"][expl.target]),
                         "delta": expl.delta()},
    })
    if ctx.options.get("video") is not None:  # a file from anywhere: is it like what the model was trained on?

        summary["training_data"] = (
            {"status": "unknown", "outside": [],
             "message": "a model loaded with pretrained= brings no record of its training clips: whether the clip "
                        "is like them cannot be checked"}
            if ctx.pretrained else compare_with_training(ctx.ck.input_stats, clip.video))
    figures = {"heatmaps": files.heatmaps, "curve": files.curve, "peaks": files.peaks_png}
    return Explained(clip, expl, summary, figures, files.gif)


def log_run(ctx: ExplainContext, done: Explained) -> None:
    """Figures, overlay and headline numbers into the W&B run (when there is one)."""
    if ctx.run is None:
        return

    media: dict[str, Any] = {f"explain/{k}": Image(v) for k, v in done.figures.items() if k != "report"}
    if "report" in done.figures:
        media["explain/report"] = Html(done.figures["report"])
    if done.gif is not None:
        media["explain/overlay"] = Video(done.gif)
    log_media(ctx.run, media)
    s = done.summary
    ctx.run.summary.update({
        "prediction": s["prediction"]["class"],
        "target": s["target"]["class"],
        "rule": s["rule"],
        **{f"share/{k}": v for k, v in s["positive_share"].items() if isinstance(v, float)},
    })
    save_in_run(ctx.run, ctx.out_dir / "summary.json")


def relevance_summary(
    pixel: np.ndarray,
    logits: np.ndarray,
    target: int,
    class_names: Sequence[str],
    label: int | None = None,
    peaks: Sequence[int] = (),
    frame_indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Prediction, probabilities, target and where the positive relevance (see
    :func:`~vidxai.viz.profile.positive_mass`) sits in time."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    pred = int(probs.argmax())
    pixel = np.asarray(pixel, dtype=np.float64)
    share = positive_share(positive_mass(pixel))
    t = len(share)
    defined = bool(np.all(np.isfinite(share)))
    halves = temporal_shares(share) if defined else dict.fromkeys(("first_half", "second_half", "last_frame"))
    idx = list(range(t)) if frame_indices is None else [int(i) for i in frame_indices]
    return {
        "prediction": {"index": pred, "class": class_names[pred], "probability": float(probs[pred])},
        "probabilities": {name: float(p) for name, p in zip(class_names, probs)},
        "target": {"index": int(target), "class": class_names[int(target)]},
        "true": None if label is None else {"index": int(label), "class": class_names[int(label)]},
        "correct": None if label is None else bool(pred == int(label)),
        "frame_indices": idx,
        "peak_frames": [{"clip_frame": int(p), "video_frame": idx[int(p)]} for p in peaks],
        "positive_share": {
            **halves,  # an odd clip's middle frame counts half in each half (viz.profile.first_half_weights)
            "uniform_last_frame": 1.0 / t,
            "per_frame": [float(s) for s in share] if defined else None,
        },
        "relevance_per_frame": [float(r) for r in pixel.reshape(len(pixel), -1).sum(axis=1)],
    }


def near_chance(probability: float, num_classes: int) -> bool:
    """Whether a top probability is close to chance: below a quarter of the way from ``1/K`` to 1."""
    chance = 1.0 / max(num_classes, 1)
    return probability < chance + (1.0 - chance) / 4


def summary_lines(result: dict[str, Any], what: str | None = None) -> list[str]:
    """The terminal summary of one explained video (from its ``summary.json`` dict; nothing is recomputed)."""
    pred, target, true = result["prediction"], result["target"], result.get("true")
    share = result["positive_share"]
    name = Path(str(result.get("video", "?"))).name
    lines = [what or f"explained {name} with rule {result['rule']}"]
    truth = ""
    if true:
        truth = f"; true class {true['class']}" + (" (correct)" if result.get("correct") else " (wrong)")
    lines.append(f"  predicted {pred['class']} with probability {pred['probability']:.2f}; "
                 f"explained target {target['class']}{truth}")
    check = result.get("training_data")
    if check:
        lines.append(("  warning: " if check["status"] == "unlike" else "  ") + check["message"])
    probs = result.get("probabilities") or {}
    k = len(probs)
    if k > 2:
        top = sorted(probs.items(), key=lambda kv: -kv[1])[: min(5, k)]
        lines.append(f"  top-{len(top)}: " + ", ".join(f"{name} {p:.2f}" for name, p in top))
    if k and near_chance(float(pred["probability"]), k):
        lines.append(f"  warning: probability {pred['probability']:.2f} is close to chance ({1 / k:.2f} for {k} "
                     "classes): the model is unsure, so the heatmap shows what an unsure model looks at; "
                     + ("is the clip like the videos it was trained on?" if result.get("pretrained") else
                        "train longer or pick a better checkpoint (ckpt=)"))
    if share.get("first_half") is None:
        lines.append("  no positive relevance for the target: the explanation does not say where it sits")
    else:
        lines.append(f"  positive relevance: {pct(share['first_half'])} in the first half, "
                     f"{pct(share['second_half'])} in the second half, {pct(share['last_frame'])} on the "
                     f"last frame (uniform: {pct(share['uniform_last_frame'])})")
    return lines
