"""LRP relevance heatmaps: colour mapping, overlays and per-video figures.

All functions take numpy arrays and return numpy arrays or
:class:`matplotlib.figure.Figure` objects built without pyplot's global state, so
they are safe in training callbacks, worker threads and headless (Agg) runs.

Conventions shared by every function here:

- ``frames``: uint8 ``(T, H, W, 3)``, the model's input frames, de-normalised.
- ``pixel``: float ``(T, H, W)``, LRP relevance summed over colour; positive values
  are evidence for the target class (drawn red), negative values evidence against
  it (drawn blue), zero is the neutral white of the diverging colour map.
- Colour limits are symmetric, ``[-vmax, +vmax]``, with ``vmax`` a robust maximum
  (``percentile`` of ``|R|``) over the whole video (``scale="video"``, so frames
  are comparable) or over each frame separately (``scale="frame"``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure

Scale = Literal["video", "frame"]

#: Diverging colour map used for relevance, like matplotlib's "seismic" but with mirrored ends:
#: dark blue (-max) - blue - white (0) - red - dark red (+max). Not registered globally.
RELEVANCE_CMAP: Colormap = LinearSegmentedColormap.from_list(
    "relevance",
    [(0.0, (0.0, 0.0, 0.5)), (0.25, (0.0, 0.0, 1.0)), (0.5, (1.0, 1.0, 1.0)),
     (0.75, (1.0, 0.0, 0.0)), (1.0, (0.5, 0.0, 0.0))],
    N=512,
)
#: Default robust-maximum percentile of ``|R|`` used for the colour limits.
DEFAULT_PERCENTILE = 99.5
#: Maximum number of columns :func:`heatmap_grid` uses before wrapping into rows.
MAX_GRID_COLUMNS = 10


# --------------------------------------------------------------------------- input checks


def _as_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate ``frames`` as uint8 ``(T, H, W, 3)`` and return it as an ndarray."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (T, H, W, 3) (channels last), got {arr.shape}; "
            "permute (T, 3, H, W) clips with .transpose(0, 2, 3, 1)"
        )
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 in [0, 255], got dtype {arr.dtype}; de-normalise the clip "
            "and convert with (x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (T = 0); pass at least one frame")
    return arr


def _as_relevance(pixel: np.ndarray, frames: np.ndarray | None = None, name: str = "pixel") -> np.ndarray:
    """Validate ``pixel`` as finite float ``(T, H, W)`` (matching ``frames`` if given)."""
    arr = np.asarray(pixel, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must have shape (T, H, W) (relevance summed over colour), got {arr.shape}; "
            "sum a (T, 3, H, W) relevance over axis 1 first"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (T = 0); pass at least one frame")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; check the explanation that produced it")
    if frames is not None and arr.shape != frames.shape[:3]:
        raise ValueError(
            f"{name} shape {arr.shape} does not match frames shape {frames.shape[:3]} (T, H, W); "
            "pass the relevance computed for exactly these frames"
        )
    return arr


def _check_scale(scale: str) -> None:
    if scale not in ("video", "frame"):
        raise ValueError(f"scale must be 'video' or 'frame', got {scale!r}")


def _check_optional_per_frame(values: Sequence | np.ndarray | None, t: int, name: str) -> np.ndarray | None:
    """Validate an optional per-frame vector (frame indices or timestamps) of length ``t``."""
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != t:
        raise ValueError(f"{name} must have one entry per frame (length {t}), got shape {arr.shape}")
    return arr


def frame_label(
    i: int,
    frame_indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
) -> str:
    """Short label of sampled frame ``i``: ``"#69"``, ``"2.76 s"``, ``"#69 · 2.76 s"`` or ``"t=3"``."""
    parts = []
    if frame_indices is not None:
        parts.append(f"#{int(frame_indices[i])}")
    if timestamps is not None:
        parts.append(f"{float(timestamps[i]):.2f} s")
    return " · ".join(parts) if parts else f"t={i}"


# --------------------------------------------------------------------------- colour mapping


def symmetric_limits(
    pixel: np.ndarray, scale: Scale = "video", percentile: float = DEFAULT_PERCENTILE
) -> np.ndarray:
    """Robust symmetric colour limits: ``vmax`` per frame, shape ``(T,)`` (limits are ``±vmax``).

    ``vmax`` is the ``percentile`` of ``|R|`` over the whole video (``scale="video"``,
    the same value repeated for every frame) or over each frame (``scale="frame"``).
    When the percentile is 0 although some relevance is non-zero (very sparse maps)
    the true maximum ``|R|`` is used instead; all-zero relevance gets ``vmax = 1``
    so that it maps to the neutral colour.
    """
    _check_scale(scale)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    rel = _as_relevance(pixel)
    mag = np.abs(rel)

    def robust_max(values: np.ndarray) -> float:
        vmax = float(np.percentile(values, percentile))
        if vmax <= 0.0:
            vmax = float(values.max())
        return vmax if vmax > 0.0 else 1.0

    if scale == "video":
        return np.full(rel.shape[0], robust_max(mag))
    return np.array([robust_max(m) for m in mag])


def relevance_to_rgba(
    pixel: np.ndarray,
    scale: Scale = "video",
    percentile: float = DEFAULT_PERCENTILE,
    cmap: str | Colormap = RELEVANCE_CMAP,
) -> tuple[np.ndarray, np.ndarray]:
    """Map relevance ``(T, H, W)`` to RGBA colours with a zero-centred diverging colour map.

    Returns ``(rgba, vmax)``: ``rgba`` is float ``(T, H, W, 4)`` in ``[0, 1]`` (red positive,
    blue negative, white zero) and ``vmax`` the ``(T,)`` limits used (see :func:`symmetric_limits`);
    values beyond ``±vmax`` saturate.
    """
    rel = _as_relevance(pixel)
    vmax = symmetric_limits(rel, scale=scale, percentile=percentile)
    normed = np.clip(rel / vmax[:, None, None], -1.0, 1.0)  # in [-1, 1]
    rgba = get_cmap(cmap)((normed + 1.0) / 2.0)
    return rgba, vmax


def _greyscale(frames: np.ndarray, dim: float) -> np.ndarray:
    """Luminance of uint8 frames as float in ``[0, 1]``, contrast reduced by ``dim`` towards mid-grey."""
    lum = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    return 0.5 + (lum - 0.5) * (1.0 - dim)


def overlay(
    frames: np.ndarray,
    pixel: np.ndarray,
    alpha: float = 0.8,
    scale: Scale = "video",
    percentile: float = DEFAULT_PERCENTILE,
    dim: float = 0.4,
    cmap: str | Colormap = RELEVANCE_CMAP,
) -> np.ndarray:
    """Blend the relevance heatmap over greyscale, dimmed frames; returns uint8 ``(T, H, W, 3)``.

    The frames are turned to grey (contrast reduced by ``dim`` in ``[0, 1)``) so that red
    and blue read clearly. The heatmap's opacity grows with ``|R| / vmax`` up to ``alpha``:
    pixels without relevance show the grey frame unchanged, weak relevance tints it red/blue and
    relevance at the limit shows the colour map's dark end (for a diverging ``cmap``).
    """
    frames = _as_frames(frames)
    rel = _as_relevance(pixel, frames)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= dim < 1.0:
        raise ValueError(f"dim must be in [0, 1), got {dim}")
    vmax = symmetric_limits(rel, scale=scale, percentile=percentile)
    normed = np.clip(rel / vmax[:, None, None], -1.0, 1.0)
    strength = np.abs(normed)
    # Hue from the saturated half of the colour map (pure red/blue for weak relevance, dark red/blue at
    # the limits) so weak relevance tints the frame instead of washing it white; the opacity carries
    # the magnitude linearly, so near-zero noise stays invisible.
    colour = get_cmap(cmap)(0.5 + 0.5 * np.sign(normed) * (0.5 + 0.5 * strength))[..., :3]
    opacity = (alpha * strength)[..., None]
    grey = _greyscale(frames, dim)[..., None]
    blended = grey * (1.0 - opacity) + colour * opacity
    return np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- figures


def _hide_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def get_cmap(cmap: str | Colormap = RELEVANCE_CMAP) -> Colormap:
    """Resolve a colour map name (any matplotlib name) or object."""
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"unknown colour map {cmap!r}; use a matplotlib name such as 'seismic' or 'bwr'"
        ) from None


def _add_relevance_colorbar(
    fig: Figure, axes, vmax: float | None, cmap: str | Colormap = RELEVANCE_CMAP, **kwargs
):
    """Colour bar for ``[-vmax, vmax]``; ``vmax=None`` means per-frame scaling (ticks ``-max, 0, +max``)."""
    limit = 1.0 if vmax is None else vmax
    mappable = ScalarMappable(norm=Normalize(-limit, limit), cmap=get_cmap(cmap))
    cbar = fig.colorbar(mappable, ax=axes, **kwargs)
    if vmax is None:
        cbar.set_ticks([-1.0, 0.0, 1.0], labels=["−max", "0", "+max"])
        cbar.set_label("relevance (each frame scaled to its own max)")
    else:
        cbar.set_label("relevance")
    return cbar


def heatmap_grid(
    frames: np.ndarray,
    pixel: np.ndarray,
    frame_indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    scale: Scale = "video",
    title: str | None = None,
    ncols: int | None = None,
    show_frames: bool = True,
    percentile: float = DEFAULT_PERCENTILE,
) -> Figure:
    """Every sampled frame with its relevance, wrapped into rows of at most ``ncols`` frames.

    With ``show_frames=True`` each block of frames is drawn as a row of original frames above a
    row of pure heatmaps (as in the paper); with ``show_frames=False`` only the heatmaps overlaid
    on the greyscale frames are drawn. Each frame is labelled with its source frame index and/or
    timestamp. One shared colour bar labelled "relevance" is added (``-max/0/+max`` ticks when
    ``scale="frame"``). Readable for T from 1 to ~100.
    """
    frames = _as_frames(frames)
    rel = _as_relevance(pixel, frames)
    t, h, w = rel.shape
    frame_indices = _check_optional_per_frame(frame_indices, t, "frame_indices")
    timestamps = _check_optional_per_frame(timestamps, t, "timestamps")
    if ncols is None:  # balanced rows of at most MAX_GRID_COLUMNS frames (12 -> 2 x 6, not 10 + 2)
        ncols = math.ceil(t / math.ceil(t / MAX_GRID_COLUMNS))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, t)
    nblocks = math.ceil(t / ncols)
    rows_per_block = 2 if show_frames else 1
    nrows = nblocks * rows_per_block

    rgba, vmax = relevance_to_rgba(rel, scale=scale, percentile=percentile)
    images = rgba if show_frames else overlay(frames, rel, scale=scale, percentile=percentile)

    cell_w = 1.5 if ncols > 4 else 2.2
    cell_h = cell_w * h / w + 0.28  # room for the label above each image
    fig_w = cell_w * ncols + 1.2  # + colour bar
    fig_h = cell_h * nrows + (0.5 if title else 0.1)
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        _hide_ticks(ax)
        ax.set_visible(False)

    labels = [frame_label(i, frame_indices, timestamps) for i in range(t)]
    _fill_grid(axes, frames, images, labels, ncols, show_frames)
    _add_relevance_colorbar(
        fig, axes.ravel().tolist(), float(vmax[0]) if scale == "video" else None, shrink=min(1.0, 4.0 / nrows)
    )
    if title:
        fig.suptitle(textwrap.fill(title, width=110))
    return fig


def _fill_grid(
    axes: np.ndarray, frames: np.ndarray, images: np.ndarray, labels: list[str], ncols: int, show_frames: bool
) -> None:
    """Draw frame ``i`` in block ``i // ncols``: the frame above its heatmap, or the overlay alone."""
    rows_per_block = 2 if show_frames else 1
    for i, label in enumerate(labels):
        block, col = divmod(i, ncols)
        top = axes[block * rows_per_block, col]
        top.set_visible(True)
        top.imshow(frames[i] if show_frames else images[i], interpolation="nearest")
        if show_frames:
            bottom = axes[block * rows_per_block + 1, col]
            bottom.set_visible(True)
            bottom.imshow(images[i], interpolation="nearest")
        top.set_title(label, fontsize=8, pad=2)
    if show_frames:
        for block in range(math.ceil(len(labels) / ncols)):
            axes[block * 2, 0].set_ylabel("frame", fontsize=8)
            axes[block * 2 + 1, 0].set_ylabel("relevance", fontsize=8)


def _check_frame_ids(ids: Sequence[int], t: int, name: str) -> list[int]:
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError(f"{name} is empty; pass at least one frame id (e.g. from curves.find_peaks)")
    bad = [i for i in ids if not 0 <= i < t]
    if bad:
        raise ValueError(f"{name} {bad} out of range for a clip of {t} frames (valid ids: 0..{t - 1})")
    return ids


def peaks_figure(
    frames: np.ndarray,
    pixel: np.ndarray,
    peaks: Sequence[int],
    frame_indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    title: str | None = None,
) -> Figure:
    """The peak frames large: one row per peak with original frame | heatmap | overlay.

    ``peaks`` are positions in the clip (``0..T-1``, e.g. from :func:`vidxai.viz.curves.find_peaks`).
    Heatmaps share the video-wide colour scale so the peaks compare with each other.
    """
    frames = _as_frames(frames)
    rel = _as_relevance(pixel, frames)
    t, h, w = rel.shape
    frame_indices = _check_optional_per_frame(frame_indices, t, "frame_indices")
    timestamps = _check_optional_per_frame(timestamps, t, "timestamps")
    peaks = _check_frame_ids(peaks, t, "peaks")

    rgba, vmax = relevance_to_rgba(rel, scale="video", percentile=percentile)
    blended = overlay(frames, rel, scale="video", percentile=percentile)
    cell = 2.8
    fig = Figure(figsize=(3 * cell + 1.2, len(peaks) * cell * h / w + 0.6), layout="constrained")
    axes = fig.subplots(len(peaks), 3, squeeze=False)
    for r, p in enumerate(peaks):
        for c, (img, name) in enumerate(
            ((frames[p], "frame"), (rgba[p], "relevance"), (blended[p], "overlay"))
        ):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            _hide_ticks(ax)
            if r == 0:
                ax.set_title(name)
        axes[r, 0].set_ylabel(frame_label(p, frame_indices, timestamps), fontsize=10)
    _add_relevance_colorbar(fig, axes.ravel().tolist(), float(vmax[0]), shrink=min(1.0, 2.0 / len(peaks)))
    fig.suptitle(title or f"Peak frames ({len(peaks)})")
    return fig


def rule_comparison_figure(
    frames: np.ndarray,
    relevances: Mapping[str, np.ndarray],
    frame_ids: Sequence[int],
    frame_indices: Sequence[int] | np.ndarray | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    title: str | None = None,
) -> Figure:
    """Compare LRP rules on the same frames: first row the original frames, then one row per rule.

    ``relevances`` maps a rule name (the row label) to its ``(T, H, W)`` relevance for ``frames``.
    Each rule is drawn on its own symmetric range (robust max over the whole video for that rule),
    since rules differ in overall magnitude; each row gets its own colour bar.
    """
    frames = _as_frames(frames)
    if not relevances:
        raise ValueError("relevances is empty; pass a dict {rule name: (T, H, W) relevance}")
    rels = {name: _as_relevance(r, frames, name=f"relevances[{name!r}]") for name, r in relevances.items()}
    t, h, w = frames.shape[:3]
    frame_indices = _check_optional_per_frame(frame_indices, t, "frame_indices")
    ids = _check_frame_ids(frame_ids, t, "frame_ids")

    nrows, ncols = 1 + len(rels), len(ids)
    cell = 1.9 if ncols > 4 else 2.4
    fig = Figure(figsize=(cell * ncols + 1.8, nrows * (cell * h / w + 0.2) + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for c, i in enumerate(ids):
        axes[0, c].imshow(frames[i], interpolation="nearest")
        axes[0, c].set_title(frame_label(i, frame_indices), fontsize=9)
    axes[0, 0].set_ylabel("input", fontsize=10)
    for r, (name, rel) in enumerate(rels.items(), start=1):
        rgba, vmax = relevance_to_rgba(rel, scale="video", percentile=percentile)
        for c, i in enumerate(ids):
            axes[r, c].imshow(rgba[i], interpolation="nearest")
        axes[r, 0].set_ylabel(name, fontsize=10)
        cbar = _add_relevance_colorbar(fig, axes[r, :].tolist(), float(vmax[0]), pad=0.01, aspect=12)
        cbar.set_label("")
        cbar.ax.tick_params(labelsize=7)
    for ax in axes.flat:
        _hide_ticks(ax)
    fig.suptitle(textwrap.fill(title or "LRP rule comparison (each rule on its own symmetric scale)", width=60))
    return fig
