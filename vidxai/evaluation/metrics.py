"""Explanations against ground truth: relevance in the actor box, on the evidence frames.

Temporal statistics of one method live in ``vidxai.viz.profile``. All functions take plain arrays or
tensors (an :class:`~vidxai.xai.Explanation`'s ``pixel`` ``(T, H, W)`` or ``frame`` ``(T,)``, or any
method's map of that shape). Boxes are ``(T, 4)`` rows ``(x0, y0, x1, y1)`` in pixel coordinates of the
explained frames, ``x1``/``y1`` exclusive; a row of NaNs (or ``x1 <= x0``) means no box in that frame.

Per-frame scores (:func:`mass_in_box`, :func:`pointing_game`) are NaN for frames without a box. The
clip-level scores of the evaluation (:func:`mass_accuracy`, :func:`rank_accuracy`, :func:`pointing_accuracy`,
:func:`temporal_accuracy`) treat the boxes over time as one space-time mask. Ties in a map (constant
regions, e.g. frame occlusion or a ReLU'd Grad-CAM) are scored as their expectation under a random
tie-break, so a flat map scores exactly its chance level instead of whatever pixel comes first.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "box_masks",
    "mass_accuracy",
    "mass_in_box",
    "pointing_accuracy",
    "pointing_game",
    "rank_accuracy",
    "temporal_accuracy",
]


def _array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _box_mask(shape: tuple[int, int], box: np.ndarray) -> np.ndarray | None:
    if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    h, w = shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _check(pixel: np.ndarray, boxes: np.ndarray) -> None:
    if pixel.ndim != 3 or boxes.shape != (pixel.shape[0], 4):
        raise ValueError(f"need pixel (T, H, W) and boxes (T, 4), got {pixel.shape} and {boxes.shape}")


def mass_in_box(
    pixel: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor, positive_only: bool = True
) -> np.ndarray:
    """Per frame: the fraction of (positive) relevance mass inside the box (relevance mass accuracy)."""
    p, b = _array(pixel), _array(boxes)
    _check(p, b)
    if positive_only:
        p = np.clip(p, 0, None)
    else:
        p = np.abs(p)
    out = np.full(len(p), np.nan)
    for t in range(len(p)):
        mask = _box_mask(p.shape[1:], b[t])
        total = p[t].sum()
        if mask is not None and total > 0:
            out[t] = p[t][mask].sum() / total
    return out


def _hit(values: np.ndarray, mask: np.ndarray) -> float:
    """1 if the maximum of ``values`` lies in ``mask``, else 0; a tied maximum: the share of its pixels inside."""
    top = values == values.max()
    return float((top & mask).sum() / top.sum())


def pointing_game(pixel: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per frame: 1.0 if the most relevant pixel lies inside the box, else 0.0 (NaN without a box).

    A maximum shared by several pixels scores the share of them inside the box (random tie-break).
    """
    p, b = _array(pixel), _array(boxes)
    _check(p, b)
    out = np.full(len(p), np.nan)
    for t in range(len(p)):
        mask = _box_mask(p.shape[1:], b[t])
        if mask is not None:
            out[t] = _hit(p[t], mask)
    return out


# ---------------------------------------------------------------------------- clip-level scores
def box_masks(boxes: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """``(T, 4)`` boxes -> ``(T, H, W)`` boolean space-time mask (all False in frames without a box)."""
    b = _array(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (T, 4), got {b.shape}")
    out = np.zeros((len(b), *shape), dtype=bool)
    for t in range(len(b)):
        mask = _box_mask(shape, b[t])
        if mask is not None:
            out[t] = mask
    return out


def _map_and_mask(pixel: np.ndarray | torch.Tensor, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, m = _array(pixel), np.asarray(mask, dtype=bool)
    if p.shape != m.shape:
        raise ValueError(f"map {p.shape} and mask {m.shape} must have the same shape")
    return p, m


def mass_accuracy(pixel: np.ndarray | torch.Tensor, mask: np.ndarray) -> float:
    """Relevance mass accuracy: the share of the positive relevance that lies inside ``mask`` (NaN if none)."""
    p, m = _map_and_mask(pixel, mask)
    pos = np.clip(p, 0, None)
    total = pos.sum()
    return float(pos[m].sum() / total) if total > 0 and m.any() else float("nan")


def rank_accuracy(pixel: np.ndarray | torch.Tensor, mask: np.ndarray) -> float:
    """Relevance rank accuracy: the share of the ``K = |mask|`` most relevant pixels that lie inside ``mask``.

    Pixels tied with the K-th value enter in proportion (the expectation under a random tie-break).
    """
    p, m = _map_and_mask(pixel, mask)
    k = int(m.sum())
    if k == 0:
        return float("nan")
    flat, inside = p.reshape(-1), m.reshape(-1)
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    above, tie = flat > threshold, flat == threshold
    need = k - int(above.sum())
    hits = (above & inside).sum() + need * (tie & inside).sum() / tie.sum()
    return float(hits / k)


def pointing_accuracy(pixel: np.ndarray | torch.Tensor, mask: np.ndarray) -> float:
    """Pointing game over a clip: the mean over frames with a box of "the frame's maximum lies in the box"."""
    p, m = _map_and_mask(pixel, mask)
    hits = [_hit(p[t], m[t]) for t in range(len(p)) if m[t].any()]
    return float(np.mean(hits)) if hits else float("nan")


def temporal_accuracy(frame: np.ndarray | torch.Tensor, evidence: np.ndarray) -> float:
    """The share of positive frame relevance (frame score = sum of the map over the frame) on evidence frames.

    NaN when no frame is evidence or no frame score is positive.
    """
    f, e = _array(frame), np.asarray(evidence, dtype=bool)
    if f.shape != e.shape or f.ndim != 1:
        raise ValueError(f"frame scores {f.shape} and evidence flags {e.shape} must both be (T,)")
    pos = np.clip(f, 0, None)
    total = pos.sum()
    return float(pos[e].sum() / total) if total > 0 and e.any() else float("nan")
