"""Relevance-in-box checks of explanations against ground truth (temporal statistics: ``vidxai.viz.profile``).

All functions take plain arrays or tensors (an :class:`~vidxai.xai.Explanation`'s ``pixel`` ``(T, H, W)``
or ``frame`` ``(T,)``) and return NumPy arrays. Boxes are ``(T, 4)`` rows ``(x0, y0, x1, y1)`` in pixel
coordinates of the explained frames, ``x1``/``y1`` exclusive; a row of NaNs (or ``x1 <= x0``) means no
box in that frame, which gives NaN for that frame.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mass_in_box", "pointing_game"]


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


def pointing_game(pixel: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per frame: 1.0 if the most relevant pixel lies inside the box, else 0.0 (NaN without a box)."""
    p, b = _array(pixel), _array(boxes)
    _check(p, b)
    out = np.full(len(p), np.nan)
    for t in range(len(p)):
        mask = _box_mask(p.shape[1:], b[t])
        if mask is not None:
            out[t] = float(mask.reshape(-1)[int(np.argmax(p[t]))])
    return out
