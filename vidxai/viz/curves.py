"""Relevance over time: per-frame scores, peak frames and the paper's relevance-curve figure."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vidxai.viz.heatmaps import _as_relevance, _check_optional_per_frame

#: Colours of the two curves, as in the paper: mean positive relevance blue, maximum red.
MEAN_POS_COLOR = "tab:blue"
MAX_COLOR = "tab:red"


def frame_scores(pixel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame summaries of pixel relevance ``(T, H, W)``; each value is float ``(T,)``.

    - ``mean_pos``: mean over pixels of ``max(R, 0)`` (the paper's blue curve),
    - ``max``: maximum relevance of the frame (the paper's red curve),
    - ``sum``: total relevance of the frame (signed).
    """
    rel = _as_relevance(pixel)
    flat = rel.reshape(rel.shape[0], -1)
    return {
        "mean_pos": np.maximum(flat, 0.0).mean(axis=1),
        "max": flat.max(axis=1),
        "sum": flat.sum(axis=1),
    }


def find_peaks(scores: Sequence[float] | np.ndarray, k: int = 3, min_distance: int = 1,
               min_height: float = 0.0) -> list[int]:
    """Frame ids (ascending) of the ``k`` highest local maxima of a 1-D score sequence.

    A local maximum is a maximal run of equal values (a plateau, possibly one frame long) whose
    neighbours on both sides are strictly lower or absent (so sequence ends count, and a constant
    sequence is one plateau); a plateau is represented by its middle frame (the left one of two
    middles). Maxima are taken by decreasing score, ties broken by earlier frame, skipping any
    within ``min_distance - 1`` frames of one already taken (``min_distance=1`` suppresses
    nothing). Maxima below ``min_height`` times the sequence maximum are ignored (``0.0`` keeps all),
    so a flat, near-zero stretch is not marked as a peak. Fewer than ``k`` ids are returned when
    there are fewer local maxima.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be 1-D (one score per frame), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or inf values; peaks are undefined")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1, got {min_distance}")
    if not 0.0 <= min_height <= 1.0:
        raise ValueError(f"min_height must be a fraction in [0, 1], got {min_height}")
    n = arr.shape[0]
    floor = min_height * float(arr.max()) if n and arr.max() > 0 else -np.inf
    candidates: list[int] = []
    start = 0
    while start < n:
        end = start
        while end + 1 < n and arr[end + 1] == arr[start]:
            end += 1
        left_lower = start == 0 or arr[start - 1] < arr[start]
        right_lower = end == n - 1 or arr[end + 1] < arr[end]
        if left_lower and right_lower and arr[start] >= floor:
            candidates.append((start + end) // 2)
        start = end + 1
    candidates.sort(key=lambda i: (-arr[i], i))
    chosen: list[int] = []
    for i in candidates:
        if len(chosen) == k:
            break
        if all(abs(i - j) >= min_distance for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def _x_axis(
    t: int, frame_indices: np.ndarray | None, timestamps: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """x values and axis label: source frame index if known, else seconds, else clip position."""
    if frame_indices is not None:
        return frame_indices.astype(np.float64), "frame index in source video"
    if timestamps is not None:
        return timestamps.astype(np.float64), "time (s)"
    return np.arange(t, dtype=np.float64), "sampled frame"


def relevance_curve_figure(
    pixel: np.ndarray,
    frame_indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    k: int = 3,
    title: str | None = None,
    min_distance: int = 1,
    min_height: float = 0.1,
) -> tuple[Figure, list[int]]:
    """The paper's relevance-over-time plot; returns ``(figure, peaks)``.

    Mean positive relevance per frame (blue, left axis) and maximum relevance per frame (red,
    right twin axis, since the scales differ) against the source frame index (or seconds). The
    top-``k`` local maxima of the mean positive relevance are marked and annotated with their
    frame index (maxima under ``min_height`` times the highest one are not marked); ``peaks`` are
    their positions in the clip (``0..T-1``), ready for :func:`vidxai.viz.heatmaps.peaks_figure`.
    """
    rel = _as_relevance(pixel)
    t = rel.shape[0]
    frame_indices = _check_optional_per_frame(frame_indices, t, "frame_indices")
    timestamps = _check_optional_per_frame(timestamps, t, "timestamps")
    scores = frame_scores(rel)
    peaks = find_peaks(scores["mean_pos"], k=k, min_distance=min_distance, min_height=min_height)
    x, xlabel = _x_axis(t, frame_indices, timestamps)

    fig = Figure(figsize=(8.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    marker = "o" if t <= 40 else None
    (mean_line,) = ax.plot(
        x, scores["mean_pos"], color=MEAN_POS_COLOR, marker=marker, ms=3, lw=1.6,
        label="mean positive relevance",
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean positive relevance", color=MEAN_POS_COLOR)
    ax.tick_params(axis="y", colors=MEAN_POS_COLOR)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    (max_line,) = ax2.plot(
        x, scores["max"], color=MAX_COLOR, marker=marker, ms=3, lw=1.2, alpha=0.85,
        label="max relevance",
    )
    ax2.set_ylabel("max relevance", color=MAX_COLOR)
    ax2.tick_params(axis="y", colors=MAX_COLOR)

    peak_handle = _mark_peaks(ax, x, scores["mean_pos"], peaks, k, frame_indices, timestamps)
    ymax = float(scores["mean_pos"].max())
    ax.set_ylim(min(0.0, float(scores["mean_pos"].min())), ymax * 1.15 if ymax > 0 else 1.0)
    if t == 1:  # a single point: give the x axis some width
        ax.set_xlim(x[0] - 1, x[0] + 1)
    handles = [mean_line, max_line] + ([peak_handle] if peak_handle is not None else [])
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.8)
    ax.set_title(textwrap.fill(title or "Relevance over time", width=80), fontsize=10)
    return fig, peaks


def _mark_peaks(
    ax: Any, x: np.ndarray, values: np.ndarray, peaks: list[int], k: int,
    frame_indices: np.ndarray | None, timestamps: np.ndarray | None,
) -> Any:
    """Mark and label each peak on ``ax`` (frame index, else seconds, else clip position); the legend handle."""
    handle = None
    for p in peaks:
        ax.axvline(x[p], color="0.4", ls=":", lw=1)
        handle = ax.scatter([x[p]], [values[p]], s=60, facecolor="none", edgecolor="black", lw=1.5, zorder=5,
                            label=f"top-{k} peaks")
        text = f"#{int(frame_indices[p])}" if frame_indices is not None else (
            f"{float(timestamps[p]):.2f} s" if timestamps is not None else f"t={p}"
        )
        ax.annotate(text, (x[p], values[p]), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=9,
                    fontweight="bold")
    return handle
