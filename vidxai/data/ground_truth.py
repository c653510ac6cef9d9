"""Ground truth stored next to a video (``<video>.json``, written by the synthetic data sets), per clip.

The sidecar holds ``boxes`` (the actor box ``[x0, y0, x1, y1]`` per source frame, in pixels of the stored
frames) and optionally ``evidence_frames`` (source frame indices where the class is decided). A clip sees
the frames ``frame_indices`` of the source, resized and cropped: :func:`clip_ground_truth` maps both onto
the clip. A clip frame counts as evidence when the source frame it shows is an evidence frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ClipTruth", "clip_ground_truth", "ground_truth_path", "load_ground_truth"]


@dataclass
class ClipTruth:
    """Ground truth of one clip: ``boxes (T, 4)`` in clip pixels and ``evidence (T,)`` flags (or ``None``)."""

    boxes: np.ndarray | None
    evidence: np.ndarray | None


def ground_truth_path(video: str | Path) -> Path:
    """``<video>.json`` beside the video file."""
    return Path(video).with_suffix(".json")


def load_ground_truth(video: str | Path) -> dict[str, Any] | None:
    """The sidecar JSON of ``video`` as a dict, or ``None`` when there is none (or it is not valid JSON)."""
    path = ground_truth_path(video)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clip_ground_truth(
    truth: dict[str, Any] | None,
    frame_indices: Sequence[int],
    source_size: Sequence[int],
    decoded_size: Sequence[int] | None,
    transform: Any,
) -> ClipTruth:
    """Map a sidecar's boxes and evidence frames onto a clip (``transform``: the clip's ``VideoTransform``).

    ``source_size``/``decoded_size`` are ``(H, W)`` of the stored frames and of the decoded frames (before
    the crop). Frames without a box in the sidecar get NaN rows; evidence is ``None`` when the sidecar
    has no ``evidence_frames`` or none of them is among the clip's frames.
    """
    idx = [int(i) for i in frame_indices]
    boxes = evidence = None
    if truth and truth.get("boxes") is not None:
        src = np.asarray(truth["boxes"], dtype=np.float64).reshape(-1, 4)
        rows = np.full((len(idx), 4), np.nan)
        for t, i in enumerate(idx):
            if 0 <= i < len(src):
                rows[t] = src[i]
        ok = np.isfinite(rows).all(1)
        if ok.any():
            rows[ok] = transform.eval_boxes(rows[ok], source_size, decoded_size)
            boxes = rows
    if truth and truth.get("evidence_frames") is not None:
        marked = {int(f) for f in truth["evidence_frames"]}
        flags = np.array([i in marked for i in idx], dtype=bool)
        evidence = flags if flags.any() else None
    return ClipTruth(boxes, evidence)
