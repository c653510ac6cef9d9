"""Turn one explanation into the files a user looks at (shared by ``explain.py`` and the callback).

Inputs are the model-space clip and an :class:`~vidxai.xai.Explanation`; outputs are the heatmap grid,
the relevance-over-time curve with its peaks, the peak frames, the overlay GIF/MP4 and a JSON summary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "ExplanationFiles",
    "positive_mass",
    "relevance_summary",
    "render_explanation",
    "write_json",
]


@dataclass
class ExplanationFiles:
    """Paths written by :func:`render_explanation` (absent files are ``None``) and the curve's peaks."""

    heatmaps: Path
    curve: Path
    peaks_png: Path
    gif: Path | None
    mp4: Path | None
    peaks: list[int] = field(default_factory=list)


def render_explanation(
    out_dir: str | Path,
    frames: np.ndarray,
    pixel: np.ndarray,
    frame_indices: Sequence[int] | None = None,
    fps: float | None = None,
    title: str | None = None,
    top_k: int = 3,
    scale: str = "video",
    prefix: str = "",
    media: bool = True,
) -> ExplanationFiles:
    """Write ``{prefix}heatmaps.png``, ``curve.png``, ``peaks.png`` and ``overlay.gif``/``.mp4`` to ``out_dir``."""
    from vidxai.viz.curves import relevance_curve_figure
    from vidxai.viz.heatmaps import heatmap_grid, peaks_figure
    from vidxai.viz.media import overlay_video, save_figure, write_gif, write_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = None if frame_indices is None else [int(i) for i in frame_indices]
    times = None if (idx is None or not fps) else [i / float(fps) for i in idx]

    heat = out / f"{prefix}heatmaps.png"
    save_figure(heatmap_grid(frames, pixel, frame_indices=idx, timestamps=times, scale=scale, title=title), heat)
    fig, peaks = relevance_curve_figure(pixel, frame_indices=idx, timestamps=times, k=top_k, title=title)
    curve = out / f"{prefix}curve.png"
    save_figure(fig, curve)
    peaks_png = out / f"{prefix}peaks.png"
    save_figure(peaks_figure(frames, pixel, peaks, frame_indices=idx, timestamps=times), peaks_png)

    gif = mp4 = None
    if media:
        video = overlay_video(frames, pixel, frame_indices=idx, scale=scale)
        media_fps = max(1.0, min(float(fps or 4.0), 8.0))
        gif = write_gif(out / f"{prefix}overlay.gif", video, fps=media_fps)
        mp4 = write_mp4(out / f"{prefix}overlay.mp4", video, fps=media_fps)
    return ExplanationFiles(heat, curve, peaks_png, gif, mp4, [int(p) for p in peaks])


def positive_mass(pixel: np.ndarray) -> np.ndarray:
    """Positive relevance per frame, ``sum over pixels of max(R, 0)`` for ``(T,H,W)`` relevance -> ``(T,)``.

    Positive evidence is counted per pixel (as in the paper's "only consider the positive"), so a frame with
    strong positive and negative regions is not mistaken for an irrelevant one.
    """
    return np.clip(np.asarray(pixel, dtype=np.float64), 0.0, None).reshape(len(pixel), -1).sum(axis=1)


def relevance_summary(
    pixel: np.ndarray,
    logits: np.ndarray,
    target: int,
    class_names: Sequence[str],
    label: int | None = None,
    peaks: Sequence[int] = (),
    frame_indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Prediction, probabilities, target and where the positive relevance (see :func:`positive_mass`) sits in time."""
    from vidxai.viz.profile import positive_share, temporal_shares

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


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON and return the path."""
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2, allow_nan=True))
    return path


def _pct(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * float(value):.0f}%"


def summary_text(result: dict[str, Any], out_dir: str | Path) -> str:
    """A short human summary of an explanation run, from the summary dicts the pipeline already wrote
    (:func:`relevance_summary` for one video, ``viz.profile.temporal_profile`` for a split); nothing is
    recomputed. Ends with the files written under ``out_dir``."""
    out = Path(out_dir)
    lines: list[str] = []
    if "prediction" in result and "positive_share" in result:
        pred, target, true = result["prediction"], result["target"], result.get("true")
        share = result["positive_share"]
        lines.append(f"explained {Path(str(result.get('video', '?'))).name}"
                     + (f" with rule {result['rule']}" if result.get("rule") else ""))
        truth = ""
        if true:
            truth = f"; true class {true['class']}" + (" (correct)" if result.get("correct") else " (wrong)")
        lines.append(f"  predicted {pred['class']} with probability {pred['probability']:.2f}; "
                     f"explained target {target['class']}{truth}")
        if share.get("first_half") is None:
            lines.append("  no positive relevance for the target: the explanation does not say where it sits")
        else:
            lines.append(f"  positive relevance: {_pct(share['first_half'])} in the first half, "
                         f"{_pct(share['second_half'])} in the second half, {_pct(share['last_frame'])} on the "
                         f"last frame (uniform: {_pct(share['uniform_last_frame'])})")
    elif "overall" in result:
        overall = result["overall"]["summary"]
        lines.append(f"explained {result.get('videos', result.get('n_videos'))} videos of split "
                     f"{result.get('split', '?')}" + (f" with rule {result['rule']}" if result.get("rule") else "")
                     + (f"; accuracy {result['accuracy']:.2f}" if "accuracy" in result else ""))
        parts = [f"{_pct(overall[k]['mean'])} {k.replace('_', ' ')} (uniform {_pct(overall[k]['uniform'])})"
                 for k in ("first_half", "second_half", "last_frame") if k in overall]
        lines.append("  mean positive relevance: " + ", ".join(parts))
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not any(part.startswith(".") or part == "wandb" for part in p.relative_to(out).parts[:-1])
                   and p.suffix != ".log")
    lines.append(f"  files in {out}: " + (", ".join(str(p.relative_to(out)) for p in files) or "none"))
    return "\n".join(lines)
