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

Variant ``"events"`` (``data=synthetic_events``): evidence at a known time. The actor is white in
every frame except for ONE short colour flash whose colour is the class (``event_red``, ...). The video
is cut into ``event_segments`` equal segments (default 8, the default clip length ``data.num_frames``)
and the flash fills exactly one of them, so both clip samplers (the training sampler takes one random
frame per segment, evaluation the segment centres) always see exactly one flash frame when
``data.num_frames == event_segments``. The flash segment lies early, in the middle or late (the first,
middle or last third of the segments), the three positions cycled over the clips of every class so they
are balanced per class. Scenes, distractors, motion and the actor's colour outside the flash come from
the same distribution for every class. The JSON adds ``evidence_frames`` (the flash frames, indices of the
stored video), ``event_position``, ``event_segment`` and ``event_colour``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator, Sequence
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
#: Actor colour outside the flash in the "events" variant (the same for every class).
EVENT_BASE_COLOUR: tuple[int, int, int] = (230, 230, 230)
EVENT_POSITIONS = ("early", "middle", "late")
VARIANTS = ("order", "events")
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


def event_classes(num_classes: int) -> list[str]:
    """Flash colours used as classes by the "events" variant (up to 4)."""
    if not 2 <= num_classes <= len(COLOURS):
        raise ConfigError(f"synthetic num_classes={num_classes} is invalid for variant=events: use 2 to "
                         f"{len(COLOURS)} (one flash colour per class)")
    return list(COLOURS)[:num_classes]


def _params(num_classes: int, groups_per_class: int, clips_per_group: int, num_frames: int,
            size: Sequence[int], fps: int, seed: int, variant: str = "order",
            event_segments: int = 8) -> dict[str, Any]:
    if variant not in VARIANTS:
        raise ConfigError(f"synthetic variant={variant!r} is unknown: use one of {', '.join(VARIANTS)}")
    h, w = (int(s) for s in size)
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise ConfigError(f"synthetic size={list(size)} must be even and >= 16 (yuv420p needs even sizes)")
    if groups_per_class < 1 or clips_per_group < 1:
        raise ConfigError("synthetic groups_per_class and clips_per_group must be >= 1")
    if variant == "events":
        event_classes(num_classes)
        if event_segments < 3 or num_frames % event_segments:
            raise ConfigError(f"synthetic event_segments={event_segments} must be >= 3 and divide "
                             f"num_frames={num_frames} (the flash fills one of event_segments equal segments)")
    n_phases = len(class_sequences(num_classes)[0]) if variant == "order" else 1
    if variant == "order" and num_frames < 2 * n_phases:
        raise ConfigError(f"synthetic num_frames={num_frames} is too short: need >= {2 * n_phases} "
                         f"for {n_phases} colour phases")
    if fps < 1:
        raise ConfigError(f"synthetic fps must be >= 1, got {fps}")
    params = {"format_version": FORMAT_VERSION, "num_classes": int(num_classes),
              "groups_per_class": int(groups_per_class), "clips_per_group": int(clips_per_group),
              "num_frames": int(num_frames), "size": [h, w], "fps": int(fps), "seed": int(seed), "codec": CODEC}
    if variant != "order":  # the order variant keeps its parameters (and existing sets) as they were
        params.update(variant=variant, event_segments=int(event_segments))
    return params


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


def _draw_actor(colours: Sequence[np.ndarray], mask: np.ndarray, start: np.ndarray, velocity: np.ndarray,
                background: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Frames ``uint8 (T, H, W, 3)`` of the actor (``mask``) moving and bouncing, coloured per frame."""
    side = mask.shape[0]
    h, w = background.shape[:2]
    frames = np.empty((len(colours), h, w, 3), dtype=np.uint8)
    boxes: list[list[int]] = []
    pos, velocity = start.copy(), velocity.copy()
    for t, colour in enumerate(colours):
        x0 = int(round(np.clip(pos[0], 0, w - side)))
        y0 = int(round(np.clip(pos[1], 0, h - side)))
        img = background.copy()
        region = img[y0:y0 + side, x0:x0 + side]
        region[mask] = colour
        frames[t] = img.clip(0, 255).astype(np.uint8)
        boxes.append([x0, y0, x0 + side, y0 + side])
        pos += velocity
        for axis, limit in ((0, w - side), (1, h - side)):  # bounce off the borders
            if not 0 <= pos[axis] <= limit:
                velocity[axis] = -velocity[axis]
                pos[axis] = np.clip(pos[axis], 0, limit)
    return frames, boxes


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
    colours = [sequence[int(np.searchsorted(starts, t, side="right") - 1)] for t in range(num_frames)]
    rgb = [np.asarray(COLOURS[c], dtype=np.float64) * brightness for c in colours]
    frames, boxes = _draw_actor(rgb, mask, start, velocity, background)
    evidence = sorted({f for s in starts[1:] for f in (s - 1, s) if 0 <= f < num_frames})
    truth = {"colour_sequence": list(sequence), "phase_starts": starts, "actor_colour_per_frame": colours,
             "actor_shape": style["shape"], "boxes": boxes, "evidence_frames": evidence}
    return frames, truth


def event_segment_range(position: str, event_segments: int) -> range:
    """The segments of ``position`` (early / middle / late = first / middle / last third of the segments)."""
    k = EVENT_POSITIONS.index(position)
    return range(k * event_segments // 3, (k + 1) * event_segments // 3)


def render_event_clip(colour: str, position: str, style: dict[str, Any], num_frames: int, event_segments: int,
                      h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one "events" clip: a white actor that flashes ``colour`` for one segment at ``position``."""
    side = int(round(rng.uniform(0.42, 0.5) * min(h, w)))
    mask = _shape_mask(style["shape"], side)
    start = np.array([rng.uniform(0, w - side), rng.uniform(0, h - side)])
    velocity = rng.uniform(-1.0, 1.0, size=2) * min(h, w) / (2.0 * num_frames)
    brightness = rng.uniform(0.9, 1.0)
    background = _background(style, h, w, rng)
    candidates = event_segment_range(position, event_segments)
    segment = int(candidates[int(rng.integers(len(candidates)))])
    length = num_frames // event_segments
    evidence = list(range(segment * length, (segment + 1) * length))
    colours = [colour if t in evidence else "white" for t in range(num_frames)]
    base = np.asarray(EVENT_BASE_COLOUR, dtype=np.float64)
    rgb = [(np.asarray(COLOURS[c], dtype=np.float64) if c != "white" else base) * brightness for c in colours]
    frames, boxes = _draw_actor(rgb, mask, start, velocity, background)
    truth = {"event_colour": colour, "event_position": position, "event_segment": segment,
             "event_segments": event_segments, "actor_colour_per_frame": colours, "actor_shape": style["shape"],
             "boxes": boxes, "evidence_frames": evidence}
    return frames, truth


def mux_frames(container: Any, stream: Any, frames: np.ndarray) -> None:
    """Encode ``uint8 (T, H, W, 3)`` frames into a PyAV ``stream`` of ``container``, then flush the encoder."""
    import av

    for frame in frames:
        image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in stream.encode(image):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


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
        mux_frames(container, stream, frames)


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
                         fps: int = 8, seed: int = 0, variant: str = "order", event_segments: int = 8) -> Path:
    """Generate the synthetic dataset at ``root`` once (idempotent) and return ``root``.

    Layout: ``root/<class>/v_<class>_<GG>/v_<class>_<GG>_<CC>.avi`` plus ``.json`` ground truth.
    ``variant="order"``: classes are colour orders; ``variant="events"``: a class is the colour of one
    flash that fills one of ``event_segments`` equal segments of the video (see the module docstring).
    A ``_COMPLETE.json`` marker stores the parameters; with different parameters the
    previous synthetic set is replaced. A non-empty ``root`` that is not a synthetic set
    is never touched.
    """
    root = Path(root).expanduser()
    params = _params(num_classes, groups_per_class, clips_per_group, num_frames, size, fps, seed, variant,
                     event_segments)
    # one generator at a time per root: parallel jobs of a sweep (or DDP ranks) wait for the first one
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(root.parent / f".{root.name}.lock"):
        return _make_locked(root, params, num_classes, groups_per_class, clips_per_group, num_frames, fps,
                            seed, variant, event_segments)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process lock on ``lock_path`` (``fcntl.flock``; no lock where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_locked(root: Path, params: dict, num_classes: int, groups_per_class: int, clips_per_group: int,
                 num_frames: int, fps: int, seed: int, variant: str, event_segments: int) -> Path:
    if variant == "events":
        sequences = [(colour,) for colour in event_classes(num_classes)]
        names = [f"event_{colour}" for colour, in sequences]
    else:
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
                if variant == "events":  # positions cycle over the clips: balanced in every class
                    position = EVENT_POSITIONS[(g * clips_per_group + c) % len(EVENT_POSITIONS)]
                    frames, truth = render_event_clip(sequence[0], position, styles[g], num_frames,
                                                      event_segments, h, w, rng)
                else:
                    frames, truth = render_clip(sequence, styles[g], num_frames, h, w, rng)
                stem = f"v_{name}_{g + 1:02d}_{c + 1:02d}"
                write_video(group_dir / f"{stem}.avi", frames, fps)
                truth = {"class": name, "group": f"{name}/{group_dir.name}", "clip": c + 1, **truth,
                         "box_format": "[x0, y0, x1, y1] in pixels of the stored frames", "params": params}
                (group_dir / f"{stem}.json").write_text(json.dumps(truth))
    (root / _IN_PROGRESS).rename(marker)
    marker.write_text(json.dumps({"params": params, "classes": names}, indent=1))
    return root
