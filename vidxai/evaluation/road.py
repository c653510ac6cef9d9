"""ROAD (Rong et al., ICML 2022): removed pixels imputed from what is left, so the clip stays in distribution.

* **Regions** (some pixels of a frame removed): noisy linear imputation, per frame. Each removed pixel is the
  weighted mean of its 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal ones; neighbours
  outside the frame are dropped), removed neighbours being unknowns too: one sparse linear system per frame
  and mask, solved for all colour channels at once; then Gaussian noise of std ``noise`` (model input space)
  is added to the imputed pixels. This is Quantus 0.6's ``noisy_linear_imputation`` (tested equal).
* **Whole frames** (every pixel of a frame removed, e.g. frame flipping): nothing of the frame is left, so the
  frame is imputed from its neighbours in time: linear interpolation between the nearest frame before and the
  nearest frame after that are not wholly removed (as they are after their own imputation), weighted by the
  distance in frames; with a kept frame on one side only, a copy of it; with no frame kept at all, zeros (the
  normalisation mean colour). The same noise is added. Frame occlusion (``occlusion``) removes one frame at a
  time: its replacement is then the mean of the two adjacent frames (a copy of the one neighbour at the ends).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor

__all__ = ["RoadImputer", "noisy_linear_imputation", "road_frames"]

#: (row offset, column offset), weight: as ROAD and Quantus
_OFFSETS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)


def noisy_linear_imputation(image: np.ndarray, mask: np.ndarray, noise: float = 0.01, rng: Any = None) -> np.ndarray:
    """``image (C, H, W)`` with the pixels of ``mask (H, W)`` imputed from their neighbours plus noise.

    ``rng`` draws the noise with ``standard_normal((C, n))`` (a ``numpy.random.Generator`` or ``RandomState``;
    default: a fresh ``default_rng(0)``).
    """
    img = np.asarray(image, dtype=np.float64)
    c, h, w = img.shape
    flat = img.reshape(c, -1)
    idx = np.flatnonzero(np.asarray(mask, dtype=bool).reshape(-1))
    out = flat.copy()
    if idx.size == 0:
        return out.reshape(img.shape)
    n = idx.size
    var = np.full(h * w, -1, dtype=np.int64)
    var[idx] = np.arange(n)
    rows, cols, vals = [], [], []
    b = np.zeros((n, c))
    diag = np.ones(n)
    r0, c0 = idx // w, idx % w
    for (dr, dc), weight in _OFFSETS:
        r, cc = r0 + dr, c0 + dc
        valid = (r >= 0) & (cc >= 0) & (r < h) & (cc < w)
        ids = np.flatnonzero(valid)
        nb = (r * w + cc)[valid]
        known = var[nb] < 0
        b[ids[known]] -= weight * flat[:, nb[known]].T
        rows.append(ids[~known])
        cols.append(var[nb[~known]])
        vals.append(np.full(int((~known).sum()), weight))
        diag[~valid] -= weight
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-diag)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    res = np.asarray(spsolve(a, b)).reshape(n, c).T
    rng = np.random.default_rng(0) if rng is None else rng
    out[:, idx] = res + noise * rng.standard_normal(res.shape)
    return out.reshape(img.shape)


def road_frames(clip: Tensor, noise: float = 0.01, rng: np.random.Generator | None = None) -> Tensor:
    """Each frame replaced by its imputation from the adjacent frames when it alone is removed (occlusion)."""
    t = clip.shape[0]
    if t == 1:
        return torch.zeros_like(clip)
    prev = torch.cat([clip[1:2], clip[:-1]])
    nxt = torch.cat([clip[1:], clip[-2:-1]])
    out = (prev + nxt) / 2
    rng = np.random.default_rng(0) if rng is None else rng
    return out + noise * torch.from_numpy(rng.standard_normal(tuple(clip.shape))).to(clip.device, clip.dtype)


class RoadImputer:
    """``fill(mask (T, H, W) bool) -> clip``: ROAD imputation of one clip (spatial solves cached per frame/mask)."""

    def __init__(self, clip: Tensor, noise: float = 0.01, seed: Any = 0) -> None:
        self.clip = clip
        self.frames = clip.detach().double().cpu().numpy()
        self.noise = float(noise)
        self.seed = seed
        self._cache: dict[tuple[int, bytes], np.ndarray] = {}

    def _rng(self, *key: int) -> np.random.Generator:
        seed = list(self.seed) if isinstance(self.seed, (tuple, list)) else [int(self.seed)]
        return np.random.default_rng([*map(int, seed), *key])

    def _spatial(self, j: int, m: np.ndarray) -> np.ndarray:
        key = (j, np.packbits(m.reshape(-1)).tobytes())
        if key not in self._cache:
            self._cache[key] = noisy_linear_imputation(self.frames[j], m, self.noise, self._rng(j, int(m.sum())))
        return self._cache[key]

    def fill(self, mask: Tensor | np.ndarray) -> Tensor:
        """The clip with the pixels of ``mask`` removed and imputed (see the module docstring)."""
        m = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask, dtype=bool)
        t = m.shape[0]
        whole = m.reshape(t, -1).all(1)
        out = self.frames.copy()
        for j in range(t):
            if m[j].any() and not whole[j]:
                out[j] = self._spatial(j, m[j])
        kept = np.flatnonzero(~whole)
        for j in np.flatnonzero(whole):
            before, after = kept[kept < j], kept[kept > j]
            if before.size and after.size:
                p, q = before[-1], after[0]
                out[j] = out[p] + (out[q] - out[p]) * (j - p) / (q - p)
            elif before.size or after.size:
                out[j] = out[before[-1] if before.size else after[0]]
            else:
                out[j] = 0.0
            out[j] += self.noise * self._rng(j, t + 1, int(whole.sum())).standard_normal(out[j].shape)
        return torch.from_numpy(out).to(self.clip.device, self.clip.dtype)
