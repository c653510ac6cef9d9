"""Randomisation tests beside MPRT: eMPRT, sMPRT (Hedström et al. 2023, Quantus 0.6's definitions) and a control.

* **MPRT** (Adebayo et al. 2018): Spearman rank correlation of ``|map|`` on the original model with ``|map|``
  after randomising the cascade (``vidxai.evaluation.mprt``). Lower is better, but an explanation that
  multiplies by the input keeps the input's structure on any model, so a high value is confounded (Binder
  et al. 2023).
* **eMPRT**: the relative rise of the map's complexity after full randomisation, complexity = the discrete
  entropy of the histogram of the map's values (``n_bins`` equal bins, 100 as in Quantus;
  ``(H(randomised) - H(original)) / H(original)``). Higher is better: an explanation of a random model
  should be noisy.
* **sMPRT**: MPRT on maps averaged over ``n`` copies of the input (``n - 1`` with Gaussian noise of std
  ``noise_magnitude * (max(x) - min(x))``, the last one clean, as Quantus), so the comparison is not
  decided by noise in the gradients; the score is the Spearman of ``|smoothed map|`` before and after full
  randomisation. Lower is better.
* **control** (input only): the Spearman correlation of ``|map|`` with the input's own magnitude (the norm
  over colour of the model input at each pixel). It ranks nothing; it shows how much of a map follows the
  input rather than the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import entropy as _scipy_entropy
from torch import Tensor

from vidxai.evaluation.mprt import spearman

__all__ = ["discrete_entropy", "emprt", "input_control", "input_magnitude", "noisy_copies", "smooth_map", "smprt"]


def discrete_entropy(a: np.ndarray, n_bins: int = 100) -> float:
    """Entropy (nats) of the histogram of ``a``'s values in ``n_bins`` equal bins (Quantus ``discrete_entropy``)."""
    histogram, _ = np.histogram(np.asarray(a, dtype=np.float64).reshape(-1), bins=int(n_bins))
    return float(_scipy_entropy(histogram))


def emprt(original: np.ndarray, randomised: np.ndarray, n_bins: int = 100) -> float:
    """Relative rise of the histogram entropy of a map after full randomisation (NaN if the original's is 0)."""
    h0 = discrete_entropy(original, n_bins)
    return (discrete_entropy(randomised, n_bins) - h0) / h0 if h0 > 0 else float("nan")


def smprt(smooth: np.ndarray, smooth_randomised: np.ndarray) -> float:
    """Spearman of the absolute smoothed maps before and after full randomisation."""
    return spearman(np.abs(smooth), np.abs(smooth_randomised))


def noisy_copies(clip: Tensor, n: int, noise_magnitude: float, rng: np.random.Generator) -> list[Tensor]:
    """``n - 1`` copies of ``clip`` with Gaussian noise of std ``noise_magnitude x (max - min)`` (Quantus's draws)."""
    if n < 1:
        raise ValueError(f"smprt samples must be >= 1, got {n}")
    std = float(noise_magnitude) * float(clip.max() - clip.min())
    return [clip + torch.from_numpy(rng.standard_normal(tuple(clip.shape))).to(clip.device, clip.dtype) * std
            for _ in range(n - 1)]


def smooth_map(
    method: Callable[[Tensor, int, int], Tensor], clip: Tensor, target: int, key: int, n: int,
    noise_magnitude: float, rng: np.random.Generator, clean: np.ndarray | None = None,
) -> np.ndarray:
    """The mean of ``method``'s maps over ``n - 1`` noisy copies of ``clip`` (:func:`noisy_copies`) and ``clip``.

    ``clean``: the map of the clean clip when already known (saves one call).
    """
    copies = noisy_copies(clip, n, noise_magnitude, rng)
    total = clean if clean is not None else method(clip, target, key).numpy()
    total = np.array(total, dtype=np.float64)
    for noisy in copies:
        total += method(noisy, target, key).numpy()
    return total / n


def input_magnitude(video: np.ndarray) -> np.ndarray:
    """``(T, C, H, W)`` model input -> ``(T, H, W)``: the norm over colour at each pixel."""
    return np.sqrt((np.asarray(video, dtype=np.float64) ** 2).sum(1))


def input_control(pixel: np.ndarray, video: np.ndarray) -> float:
    """Spearman of ``|map|`` with the input's magnitude (1: the map ranks pixels as the input does)."""
    return spearman(np.abs(pixel), input_magnitude(video))
