"""Perturbation scores: frame and region flipping curves of the target logit, and their AOPC.

A flipping curve replaces parts of a clip, step by step, with a replacement value and records the target
logit ``f`` after each step (step 0 = the intact clip). Parts are whole frames (frame flipping) or
``region_size`` x ``region_size`` regions of one frame (region flipping). The order comes from a map
(most relevant first, MoRF; least relevant first, LeRF), from a seeded permutation (random) or from
the position (last frame first, first frame first). A frame's score is the sum of the map over the frame;
a region's score the sum over the region. Ties are broken by one seeded random order shared by all maps.

AOPC (Samek et al. 2017): the mean over the curve's steps ``k = 0..K`` of ``f(x) - f(x^(k))``.

All perturbed clips of one video go through the model in batches of ``batch_size``; a clip that two
curves share (the intact clip, the fully replaced one, identical orders of two methods) runs once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidxai.models.contract import Stage, run_stages

__all__ = [
    "BASELINES",
    "aopc",
    "flipping_curves",
    "frame_masks",
    "frame_order",
    "frame_scores",
    "region_grid",
    "region_masks",
    "region_order",
    "region_scores",
    "region_steps",
    "replacement",
]

#: Replacement values for removed pixels (``baseline=``).
BASELINES: dict[str, str] = {
    "mean": "the clip's per-pixel mean over time (model input space)",
    "zero": "zeros in model input space (the normalisation mean colour)",
    "blur": "each frame Gaussian-blurred in space (sigma = blur_sigma pixels)",
    "road": "ROAD: regions by noisy linear imputation from their neighbours in the frame, whole frames by linear "
            "interpolation between the nearest kept frames, plus noise (std road_noise); vidxai.evaluation.road",
}


def _gaussian_blur(clip: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=clip.dtype, device=clip.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    t, c, h, w = clip.shape
    y = clip.reshape(t * c, 1, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(t, c, h, w)


def replacement(clip: Tensor, baseline: str = "mean", blur_sigma: float = 2.0, road_noise: float = 0.01) -> Tensor:
    """The replacement clip ``(T, C, H, W)`` for ``clip`` (model input space), see :data:`BASELINES`.

    For ``road`` this is what replaces each frame when it alone is removed (frame occlusion); flipping
    curves impute every perturbed clip with :class:`~vidxai.evaluation.road.RoadImputer` instead.
    """
    if baseline == "mean":
        return clip.mean(0, keepdim=True).expand_as(clip).clone()
    if baseline == "zero":
        return torch.zeros_like(clip)
    if baseline == "blur":
        if not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
        return _gaussian_blur(clip, float(blur_sigma))
    if baseline == "road":
        from vidxai.evaluation.road import road_frames

        return road_frames(clip, road_noise)
    raise ValueError(f"unknown baseline={baseline!r}; choose one of {sorted(BASELINES)}")


# ---------------------------------------------------------------------------- orders
def frame_scores(pixel: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` map -> ``(T,)`` frame scores (sum over each frame)."""
    p = np.asarray(pixel, dtype=np.float64)
    return p.reshape(len(p), -1).sum(1)


def _ranked(scores: np.ndarray, tiebreak: np.ndarray, descending: bool) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if tiebreak.shape != s.shape:
        raise ValueError(f"tie-break order of {tiebreak.shape} for {s.shape} scores")
    return np.lexsort((tiebreak, -s if descending else s))


def frame_order(scores: np.ndarray, tiebreak: np.ndarray, descending: bool = True) -> np.ndarray:
    """Frame indices by score (most relevant first if ``descending``); ties by ``tiebreak`` (a permutation)."""
    return _ranked(scores, tiebreak, descending)


def frame_masks(order: Sequence[int], shape: tuple[int, int, int]) -> Tensor:
    """``(T+1, T, H, W)`` masks: step ``k`` replaces the first ``k`` frames of ``order``."""
    t = shape[0]
    order = np.array(order, dtype=np.int64)  # a copy (no negative strides)
    if sorted(order.tolist()) != list(range(t)):
        raise ValueError(f"a frame order must be a permutation of 0..{t - 1}, got {order.tolist()}")
    per_frame = torch.zeros(t + 1, t, dtype=torch.bool)
    for k in range(1, t + 1):
        per_frame[k, torch.from_numpy(order[:k])] = True
    return per_frame[:, :, None, None].expand(t + 1, *shape)


def region_grid(shape: tuple[int, int, int], region_size: int) -> tuple[int, int, int]:
    """``(T, rows, cols)`` of the region grid (border regions are smaller where H, W are not multiples)."""
    if region_size < 1:
        raise ValueError(f"region_size must be >= 1, got {region_size}")
    t, h, w = shape
    return t, -(-h // region_size), -(-w // region_size)


def region_scores(pixel: np.ndarray, region_size: int) -> np.ndarray:
    """``(T, H, W)`` map -> ``(T, rows, cols)`` region scores (sum over each region)."""
    p = np.asarray(pixel, dtype=np.float64)
    t, rows, cols = region_grid(p.shape, region_size)
    padded = np.zeros((t, rows * region_size, cols * region_size))
    padded[:, : p.shape[1], : p.shape[2]] = p
    return padded.reshape(t, rows, region_size, cols, region_size).sum((2, 4))


def region_order(scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Flat region indices, most relevant first; ties by ``tiebreak``."""
    return _ranked(scores, tiebreak, True)


def region_steps(n_regions: int, step: float, maximum: float) -> list[int]:
    """Number of regions removed at each step: ``round(k * step * n)`` for ``k = 0 .. floor(maximum / step)``."""
    if not 0 < step <= maximum <= 1:
        raise ValueError(f"need 0 < region_step <= region_max <= 1, got {step} and {maximum}")
    n_steps = int(np.floor(maximum / step + 1e-9))
    return [int(round(k * step * n_regions)) for k in range(n_steps + 1)]


def region_masks(order: Sequence[int], shape: tuple[int, int, int], region_size: int, counts: Sequence[int]) -> Tensor:
    """``(len(counts), T, H, W)`` masks: step ``k`` replaces the first ``counts[k]`` regions of ``order``."""
    t, rows, cols = region_grid(shape, region_size)
    order = torch.from_numpy(np.array(order, dtype=np.int64))
    out = torch.zeros(len(counts), t * rows * cols, dtype=torch.bool)
    for k, n in enumerate(counts):
        out[k, order[:n]] = True
    grid = out.reshape(len(counts), t, rows, cols)
    pix = grid.repeat_interleave(region_size, 2).repeat_interleave(region_size, 3)
    return pix[:, :, : shape[1], : shape[2]]


# ---------------------------------------------------------------------------- curves
def aopc(curve: Sequence[float] | np.ndarray) -> float:
    """Area over the perturbation curve: mean over all steps (step 0 included) of ``curve[0] - curve[k]``."""
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"a flipping curve is a non-empty 1-d sequence, got shape {c.shape}")
    return float(np.mean(c[0] - c))


def flipping_curves(
    model: Callable[[Tensor], Tensor],
    clip: Tensor,
    base: Tensor | Any,
    target: int,
    masks: Mapping[str, Tensor],
    batch_size: int = 32,
    stages: Sequence[Stage] | None = None,
) -> dict[str, np.ndarray]:
    """Target logit along each curve: ``masks[name] (K, T, H, W)`` bool -> ``curves[name] (K,)``.

    ``clip``/``base`` are ``(T, C, H, W)`` (the clip and its replacement); a masked pixel takes the
    replacement's value in every channel. ``base`` may instead be an imputer with ``fill(mask) -> clip``
    (ROAD: the value of a removed pixel depends on the mask). Identical masks (across curves too) are
    evaluated once, and all distinct perturbed clips go through ``model`` in batches of ``batch_size``.

    With ``stages`` (the model's :func:`~vidxai.models.contract.explain_stages`) whose first stage is a
    per-frame CNN, each distinct perturbed *frame* goes through the CNN once (batches of
    ``batch_size * T`` frames) and only the later stages run per clip: the same logits (the contract's
    composition), far fewer CNN passes, since most frames of most perturbed clips are unchanged.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys: dict[bytes, int] = {}
    unique: list[Tensor] = []
    index: dict[str, list[int]] = {}
    for name, m in masks.items():
        if m.dtype != torch.bool or m.shape[1:] != (clip.shape[0], *clip.shape[2:]):
            raise ValueError(f"masks[{name!r}] must be bool (K, T, H, W) for a clip {tuple(clip.shape)}")
        rows = []
        for step in m:
            key = np.packbits(step.numpy().reshape(-1)).tobytes()
            if key not in keys:
                keys[key] = len(unique)
                unique.append(step)
            rows.append(keys[key])
        index[name] = rows
    if not isinstance(base, Tensor):
        values = _imputed_logits(model, [base.fill(m) for m in unique], target, batch_size, stages)
    elif stages and stages[0].kind == "frames":
        values = _per_frame_logits(stages, clip, base, target, unique, batch_size)
    else:
        values = np.empty(len(unique))
        with torch.inference_mode():
            for start in range(0, len(unique), batch_size):
                m = torch.stack(unique[start : start + batch_size]).to(clip.device)[:, :, None]  # (B, T, 1, H, W)
                x = torch.where(m, base[None], clip[None])
                values[start : start + len(m)] = model(x)[:, target].double().cpu().numpy()
    return {name: values[rows] for name, rows in index.items()}


def _per_frame_logits(
    stages: Sequence[Stage], clip: Tensor, base: Tensor, target: int, unique: list[Tensor], batch_size: int
) -> np.ndarray:
    """Target logits of the perturbed clips ``unique`` with the per-frame CNN run once per distinct frame."""
    t = clip.shape[0]
    frame_ids: dict[tuple[int, bytes], int] = {}
    frames: list[tuple[int, Tensor]] = []
    seq = np.empty((len(unique), t), dtype=np.int64)
    for u, step in enumerate(unique):
        for j in range(t):
            key = (j, np.packbits(step[j].numpy().reshape(-1)).tobytes())
            if key not in frame_ids:
                frame_ids[key] = len(frames)
                frames.append((j, step[j]))
            seq[u, j] = frame_ids[key]
    values = np.empty(len(unique))
    with torch.inference_mode():
        feats = []
        per_batch = batch_size * t
        for start in range(0, len(frames), per_batch):
            chunk = frames[start : start + per_batch]
            x = torch.stack([torch.where(m.to(clip.device)[None], base[j], clip[j]) for j, m in chunk])
            feats.append(stages[0].module(x))
        features = torch.cat(feats)
        for start in range(0, len(unique), batch_size):
            idx = torch.from_numpy(seq[start : start + batch_size]).to(features.device)
            logits = run_stages(stages[1:], features[idx])
            values[start : start + len(idx)] = logits[:, target].double().cpu().numpy()
    return values


def _imputed_logits(
    model: Callable[[Tensor], Tensor], clips: list[Tensor], target: int, batch_size: int,
    stages: Sequence[Stage] | None,
) -> np.ndarray:
    """Target logits of whole perturbed clips; with a per-frame CNN each distinct frame (by content) runs once."""
    values = np.empty(len(clips))
    with torch.inference_mode():
        if not (stages and stages[0].kind == "frames"):
            for start in range(0, len(clips), batch_size):
                x = torch.stack(clips[start : start + batch_size])
                values[start : start + len(x)] = model(x)[:, target].double().cpu().numpy()
            return values
        t = clips[0].shape[0]
        ids: dict[tuple[int, bytes], int] = {}
        frames: list[Tensor] = []
        seq = np.empty((len(clips), t), dtype=np.int64)
        for u, c in enumerate(clips):
            for j in range(t):
                key = (j, c[j].cpu().numpy().tobytes())
                seq[u, j] = ids.setdefault(key, len(frames))
                if seq[u, j] == len(frames):
                    frames.append(c[j])
        features = torch.cat([stages[0].module(torch.stack(frames[s : s + batch_size * t]))
                              for s in range(0, len(frames), batch_size * t)])
        for start in range(0, len(clips), batch_size):
            idx = torch.from_numpy(seq[start : start + batch_size]).to(features.device)
            values[start : start + len(idx)] = run_stages(stages[1:], features[idx])[:, target].double().cpu().numpy()
    return values
