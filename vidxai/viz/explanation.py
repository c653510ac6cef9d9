"""One explanation drawn as the files a user looks at (shared by ``explain.py`` and the explanation callback).

Inputs are the clip as the model saw it and its pixel relevance; outputs are the heatmap grid, the
relevance-over-time curve with its peaks, the peak frames and the overlay GIF/MP4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidxai.viz.curves import relevance_curve_figure
from vidxai.viz.heatmaps import heatmap_grid, peaks_figure
from vidxai.viz.media import overlay_video, save_figure, write_gif, write_mp4

__all__ = ["ExplanationFiles", "render_explanation"]


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
