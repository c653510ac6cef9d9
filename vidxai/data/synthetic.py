"""Synthetic UCF11-style dataset: real encoded videos whose class is a colour ORDER over time.

Every video shows an "actor" (a big, saturated shape) moving over a textured background
among static, muted distractors. The actor changes colour in phases; a class is the
ordered sequence of colours (e.g. red -> green -> blue). Every class shows every colour for
the same share of the video, so a single frame (or its colour histogram) cannot identify
the class; only the temporal order does. Globally pooled per-frame features carry the
actor's colour, so a VGG16+LSTM or a ConvLSTM can learn it.

Groups (like UCF11's actor+scene groups) vary background texture and tint, distractor
colours and placement, and the actor's shape, so group-disjoint splits test generalisation.
Each ``<video>.avi`` has a ``<video>.json`` with ground truth: class, group, the actor box
per frame, the evidence frames (around colour changes) and the generation parameters.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidxai.errors import ConfigError

MARKER = "_COMPLETE.json"
_IN_PROGRESS = "_GENERATING.json"
FORMAT_VERSION = 1

#: Saturated, well separated actor colours (RGB); yuv420p keeps them on big regions.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 35, 35),
    "green": (35, 215, 50),
    "blue": (40, 70, 240),
    "yellow": (240, 225, 40),
}
SHAPES = ("square", "disk", "diamond")
CODEC = "mpeg4"


def class_sequences(num_classes: int) -> list[tuple[str, ...]]:
    """Colour orders used as classes: permutations of 3 colours (up to 6 classes) or 4 (up to 24)."""
    if num_classes < 2:
        raise ConfigError(f"synthetic num_classes must be >= 2, got {num_classes}")
    n_colours = 3 if num_classes <= 6 else 4
    perms = list(itertools.permutations(list(COLOURS)[:n_colours]))
    if num_classes > len(perms):
        raise ConfigError(f"synthetic num_classes={num_classes} is too large: at most {len(perms)} "
                         "colour orders")
    return [tuple(p) for p in perms[:num_classes]]


def class_name(sequence: Sequence[str]) -> str:
    """Folder name of a colour order, e.g. ``red_green_blue``."""
    return "_".join(sequence)


def _params(num_classes: int, groups_per_class: int, clips_per_group: int, num_frames: int,
            size: Sequence[int], fps: int, seed: int) -> dict[str, Any]:
    h, w = (int(s) for s in size)
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise ConfigError(f"synthetic size={list(size)} must be even and >= 16 (yuv420p needs even sizes)")
    if groups_per_class < 1 or clips_per_group < 1:
        raise ConfigError("synthetic groups_per_class and clips_per_group must be >= 1")
    n_phases = len(class_sequences(num_classes)[0])
    if num_frames < 2 * n_phases:
        raise ConfigError(f"synthetic num_frames={num_frames} is too short: need >= {2 * n_phases} "
                         f"for {n_phases} colour phases")
    if fps < 1:
        raise ConfigError(f"synthetic fps must be >= 1, got {fps}")
    return {"format_version": FORMAT_VERSION, "num_classes": int(num_classes),
            "groups_per_class": int(groups_per_class), "clips_per_group": int(clips_per_group),
            "num_frames": int(num_frames), "size": [h, w], "fps": int(fps), "seed": int(seed), "codec": CODEC}


def _group_style(rng: np.random.Generator, h: int, w: int) -> dict[str, Any]:
    """Scene of one group: background texture and tint, distractors, actor shape."""
    n_distractors = int(rng.integers(2, 4))
    side = max(3, int(round(0.16 * min(h, w))))
    distractors = []
    for _ in range(n_distractors):
        y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        grey = rng.uniform(90, 170)
        tint = rng.uniform(-30, 30, size=3)  # muted: far from the saturated actor colours
        colour = (grey + tint).clip(0, 255).tolist()
        distractors.append({"box": [x0, y0, x0 + side, y0 + side], "colour": colour})
    return {
        "texture_freq": float(rng.uniform(0.15, 0.6)),
        "texture_angle": float(rng.uniform(0, np.pi)),
        "texture_contrast": float(rng.uniform(10, 30)),
        "base": float(rng.uniform(100, 150)),
        "tint": rng.uniform(-12, 12, size=3).tolist(),
        "distractors": distractors,
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
    }


def _background(style: dict[str, Any], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    proj = np.cos(style["texture_angle"]) * xx + np.sin(style["texture_angle"]) * yy
    texture = style["texture_contrast"] * np.sin(style["texture_freq"] * proj)
    noise = rng.normal(0, 4, size=(h, w))
    img = style["base"] + texture + noise
    img = img[..., None] + np.asarray(style["tint"])[None, None, :]
    for d in style["distractors"]:
        x0, y0, x1, y1 = d["box"]
        img[y0:y1, x0:x1] = d["colour"]
    return img


def _shape_mask(shape: str, side: int) -> np.ndarray:
    c = (side - 1) / 2.0
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    if shape == "disk":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2.0) ** 2
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= side / 2.0 + 0.5
    return np.ones((side, side), dtype=bool)


def _phase_starts(n_frames: int, n_phases: int, rng: np.random.Generator) -> list[int]:
    """First frame of each colour phase: equal shares, boundaries jittered by at most one frame."""
    starts = [0]
    for k in range(1, n_phases):
        nominal = int(round(k * n_frames / n_phases))
        latest = n_frames - 2 * (n_phases - k)  # every phase keeps at least two frames
        starts.append(int(np.clip(nominal + rng.integers(-1, 2), starts[-1] + 2, latest)))
    return starts


def render_clip(sequence: Sequence[str], style: dict[str, Any], num_frames: int, h: int, w: int,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one clip ``uint8 (T, H, W, 3)`` and its ground truth (boxes, phases, evidence)."""
    side = int(round(rng.uniform(0.42, 0.5) * min(h, w)))
    mask = _shape_mask(style["shape"], side)
    start = np.array([rng.uniform(0, w - side), rng.uniform(0, h - side)])
    velocity = rng.uniform(-1.0, 1.0, size=2) * min(h, w) / (2.0 * num_frames)
    starts = _phase_starts(num_frames, len(sequence), rng)
    brightness = rng.uniform(0.9, 1.0)
    background = _background(style, h, w, rng)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    boxes: list[list[int]] = []
    colours: list[str] = []
    pos = start.copy()
    for t in range(num_frames):
        phase = int(np.searchsorted(starts, t, side="right") - 1)
        colour = np.asarray(COLOURS[sequence[phase]], dtype=np.float64) * brightness
        x0 = int(round(np.clip(pos[0], 0, w - side)))
        y0 = int(round(np.clip(pos[1], 0, h - side)))
        img = background.copy()
        region = img[y0:y0 + side, x0:x0 + side]
        region[mask] = colour
        frames[t] = img.clip(0, 255).astype(np.uint8)
        boxes.append([x0, y0, x0 + side, y0 + side])
        colours.append(sequence[phase])
        pos += velocity
        for axis, limit in ((0, w - side), (1, h - side)):  # bounce off the borders
            if not 0 <= pos[axis] <= limit:
                velocity[axis] = -velocity[axis]
                pos[axis] = np.clip(pos[axis], 0, limit)
    evidence = sorted({f for s in starts[1:] for f in (s - 1, s) if 0 <= f < num_frames})
    truth = {"colour_sequence": list(sequence), "phase_starts": starts, "actor_colour_per_frame": colours,
             "actor_shape": style["shape"], "boxes": boxes, "evidence_frames": evidence}
    return frames, truth


def write_video(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode ``uint8 (T, H, W, 3)`` frames with PyAV (mpeg4, yuv420p, near-lossless quantiser)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=int(fps))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
        stream.options = {"qscale": "2"}  # high quality: colours must survive compression
        stream.thread_count = 1  # byte-identical output for the same seed
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _clear_previous(root: Path) -> None:
    """Remove a previous (complete or interrupted) synthetic set: only the folders it listed."""
    for marker in (root / MARKER, root / _IN_PROGRESS):
        if marker.is_file():
            try:
                listed = json.loads(marker.read_text()).get("classes", [])
            except ValueError:
                listed = []
            for name in listed:
                if (root / name).is_dir():
                    shutil.rmtree(root / name)
            marker.unlink()


def make_synthetic_ucf11(root: str | Path, num_classes: int = 4, groups_per_class: int = 10,
                         clips_per_group: int = 3, num_frames: int = 16, size: Sequence[int] = (64, 64),
                         fps: int = 8, seed: int = 0) -> Path:
    """Generate the synthetic dataset at ``root`` once (idempotent) and return ``root``.

    Layout: ``root/<class>/v_<class>_<GG>/v_<class>_<GG>_<CC>.avi`` plus ``.json`` ground truth.
    A ``_COMPLETE.json`` marker stores the parameters; with different parameters the
    previous synthetic set is replaced. A non-empty ``root`` that is not a synthetic set
    is never touched.
    """
    root = Path(root).expanduser()
    params = _params(num_classes, groups_per_class, clips_per_group, num_frames, size, fps, seed)
    sequences = class_sequences(num_classes)
    names = [class_name(s) for s in sequences]
    marker = root / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("params") == params:
                return root
        except ValueError:
            pass
    if root.is_dir() and not (marker.is_file() or (root / _IN_PROGRESS).is_file()) and any(root.iterdir()):
        raise ConfigError(f"data.root={str(root)!r} is not empty and holds no synthetic dataset: "
                         "point data.root at an empty or new folder to generate synthetic data there")
    if root.is_dir():
        _clear_previous(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _IN_PROGRESS).write_text(json.dumps({"params": params, "classes": names}))
    h, w = params["size"]
    styles = [_group_style(np.random.default_rng([seed, 1, g]), h, w) for g in range(groups_per_class)]
    for label, (sequence, name) in enumerate(zip(sequences, names)):
        for g in range(groups_per_class):
            # group g has the same scene in every class (like one UCF11 actor+scene per group index)
            group_dir = root / name / f"v_{name}_{g + 1:02d}"
            group_dir.mkdir(parents=True, exist_ok=True)
            for c in range(clips_per_group):
                rng = np.random.default_rng([seed, 2, label, g, c])
                frames, truth = render_clip(sequence, styles[g], num_frames, h, w, rng)
                stem = f"v_{name}_{g + 1:02d}_{c + 1:02d}"
                write_video(group_dir / f"{stem}.avi", frames, fps)
                truth = {"class": name, "group": f"{name}/{group_dir.name}", "clip": c + 1, **truth,
                         "box_format": "[x0, y0, x1, y1] in pixels of the stored frames", "params": params}
                (group_dir / f"{stem}.json").write_text(json.dumps(truth))
    (root / _IN_PROGRESS).rename(marker)
    marker.write_text(json.dumps({"params": params, "classes": names}, indent=1))
    return root
