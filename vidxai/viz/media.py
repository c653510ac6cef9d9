"""Media output: GIF/MP4 writers, upscaled overlay videos and figure-to-array/file helpers.

``save_figure`` is :func:`vidxai.viz.metrics.save_figure`, re-exported for convenience.

GIFs are written with Pillow (a matplotlib dependency) and MP4s with PyAV, so logging
explanation videos (e.g. to W&B) needs no extra media package.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from vidxai.data.synthetic import mux_frames
from vidxai.viz.heatmaps import (
    DEFAULT_PERCENTILE,
    RELEVANCE_CMAP,
    Scale,
    _as_frames,
    _as_relevance,
    _check_optional_per_frame,
    frame_label,
    get_cmap,
    overlay,
    symmetric_limits,
)
from vidxai.viz.metrics import save_figure  # re-exported here; one implementation for all figures

__all__ = ["MP4_CODECS", "figure_to_array", "overlay_video", "save_figure", "write_gif", "write_mp4"]

log = logging.getLogger(__name__)

#: MP4 encoders tried in order; the first one the installed PyAV/FFmpeg provides is used.
MP4_CODECS = ("libx264", "h264", "mpeg4")


def _check_fps(fps: float) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 4, loop: int = 0) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` as an animated GIF (``loop=0``: forever); returns the path.

    Pillow merges consecutive identical frames into one longer frame, so playback timing is
    exact but the file can hold fewer than T frames when frames repeat.
    """
    frames = _as_frames(frames)
    _check_fps(fps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=loop,
        optimize=False,
    )
    return path


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad height and width to even sizes by repeating the last row/column (yuv420p needs it)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 4) -> Path | None:
    """Write uint8 frames ``(T, H, W, 3)`` as an H.264 (or MPEG-4 part 2) MP4; returns the path.

    Odd frame sizes are padded to even ones. Returns ``None`` and logs the reason when PyAV is
    missing or none of :data:`MP4_CODECS` can encode (a partial file is removed).
    """
    frames = _pad_even(_as_frames(frames))
    _check_fps(fps)
    try:
        import av
    except ImportError as err:
        log.warning("write_mp4: PyAV is not installed (%s); no MP4 written to %s", err, path)
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    errors = []
    for codec in MP4_CODECS:
        try:
            av.codec.Codec(codec, "w")
        except Exception as err:  # noqa: BLE001
            errors.append(f"{codec}: {err}")
            continue
        try:
            with av.open(str(path), mode="w", format="mp4") as container:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = frames.shape[2], frames.shape[1]
                stream.pix_fmt = "yuv420p"
                mux_frames(container, stream, frames)
            return path
        except Exception as err:  # noqa: BLE001 - try the next encoder, report all at the end
            errors.append(f"{codec}: {err}")
            path.unlink(missing_ok=True)
    log.warning("write_mp4: no usable MP4 encoder (%s); no MP4 written to %s", "; ".join(errors), path)
    return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _colorbar_strip(width: int, height: int, vmax: float | None) -> np.ndarray:
    """A horizontal ``-vmax .. 0 .. +vmax`` colour bar with labels, uint8 ``(height, width, 3)``."""
    strip = Image.new("RGB", (width, height), "white")
    bar_h = max(4, height // 2 - 2)
    ramp = get_cmap(RELEVANCE_CMAP)(np.linspace(0.0, 1.0, width))[:, :3]
    bar = np.broadcast_to((ramp * 255).round().astype(np.uint8)[None], (bar_h, width, 3))
    strip.paste(Image.fromarray(np.ascontiguousarray(bar)), (0, 0))
    draw = ImageDraw.Draw(strip)
    font = _font(max(8, height - bar_h - 4))
    lo, hi = ("-max", "+max") if vmax is None else (f"{-vmax:.2g}", f"+{vmax:.2g}")
    y = bar_h + 1
    draw.text((2, y), lo, fill="black", font=font)
    draw.text((width // 2, y), "0", fill="black", font=font, anchor="ma")
    draw.text((width - 2, y), hi, fill="black", font=font, anchor="ra")
    return np.asarray(strip)


def overlay_video(
    frames: np.ndarray,
    pixel: np.ndarray,
    frame_indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    alpha: float = 0.8,
    scale: Scale = "video",
    percentile: float = DEFAULT_PERCENTILE,
    min_size: int = 224,
    colorbar: bool = True,
) -> np.ndarray:
    """Heatmap-overlay frames ready for GIF/MP4: uint8 ``(T, H', W', 3)``.

    Frames are upscaled by an integer factor (nearest neighbour, so relevance pixels stay
    crisp) until the short side is at least ``min_size``, labelled with their frame index /
    timestamp in the top-left corner and, if ``colorbar``, given a colour-bar strip below.
    """
    frames = _as_frames(frames)
    rel = _as_relevance(pixel, frames)
    t, h, w = rel.shape
    frame_indices = _check_optional_per_frame(frame_indices, t, "frame_indices")
    timestamps = _check_optional_per_frame(timestamps, t, "timestamps")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    blended = overlay(frames, rel, alpha=alpha, scale=scale, percentile=percentile)
    factor = max(1, math.ceil(min_size / min(h, w)))
    big = blended.repeat(factor, axis=1).repeat(factor, axis=2)
    out_w = big.shape[2]
    font = _font(max(10, out_w // 18))
    labelled = []
    for i in range(t):
        img = Image.fromarray(big[i])
        draw = ImageDraw.Draw(img)
        draw.text(
            (4, 3), frame_label(i, frame_indices, timestamps), fill="white", font=font,
            stroke_width=2, stroke_fill="black",
        )
        labelled.append(np.asarray(img))
    out = np.stack(labelled)
    if colorbar:
        vmax = symmetric_limits(rel, scale=scale, percentile=percentile)
        strip = _colorbar_strip(out_w, max(16, out_w // 10), float(vmax[0]) if scale == "video" else None)
        out = np.concatenate([out, np.broadcast_to(strip, (t, *strip.shape))], axis=1)
    return np.ascontiguousarray(out)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure (Agg, no pyplot) to uint8 RGB ``(H, W, 3)``."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
