"""The built-in scores, each one registration (:func:`vidxai.evaluation.registry.register_metric`); the AOPC
scores of the flipping curves are registered with their curve (:mod:`vidxai.evaluation.curves`), first.

Definitions of the ground-truth scores: :mod:`vidxai.evaluation.metrics` and ``docs/evaluation.md``.
"""

from __future__ import annotations

import numpy as np

from vidxai.evaluation import curves as _curves  # noqa: F401 (registers the curves and their AOPC scores first)
from vidxai.evaluation.metrics import box_masks, mass_accuracy, pointing_accuracy, rank_accuracy, temporal_accuracy
from vidxai.evaluation.mprt import spearman
from vidxai.evaluation.randomisation import emprt, input_control, smprt
from vidxai.evaluation.registry import ScoreInput, register_metric

__all__ = ["box_mask"]


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def box_mask(s: ScoreInput) -> np.ndarray | None:
    """The clip's boxes as a ``(T, H, W)`` mask (cached on ``s``), ``None`` without boxes or with an empty mask."""
    if "mask" not in s.cache:
        mask = None
        if s.truth is not None and s.truth.boxes is not None:
            mask = box_masks(s.truth.boxes, s.pixel.shape[1:])
            mask = mask if mask.any() else None
        s.cache["mask"] = mask
    return s.cache["mask"]


# ------------------------------------------------------------------------ perturbation
# frame_aopc_morf, frame_aopc_lerf, region_aopc_morf: registered with their curves (vidxai.evaluation.curves)


# ------------------------------------------------------------------------ ground truth
def _box_share(s: ScoreInput) -> float | None:
    mask = box_mask(s)
    return None if mask is None else float(mask.mean())


def _pointing_chance(s: ScoreInput) -> float | None:
    mask = box_mask(s)
    return None if mask is None else float(np.mean([m.mean() for m in mask if m.any()]))


@register_metric("mass_accuracy", label="relevance mass in the actor box", direction="higher",
                 family="ground_truth", chance=_box_share, needs="boxes",
                 description="share of the positive relevance inside the boxes")
def _mass(s: ScoreInput) -> float | None:
    mask = box_mask(s)
    return None if mask is None else _finite(mass_accuracy(s.pixel, mask))


@register_metric("rank_accuracy", label="relevance rank accuracy (actor box)", direction="higher",
                 family="ground_truth", chance=_box_share, needs="boxes",
                 description="share of the K most relevant pixels inside the boxes, K = box pixels")
def _rank(s: ScoreInput) -> float | None:
    mask = box_mask(s)
    return None if mask is None else _finite(rank_accuracy(s.pixel, mask))


@register_metric("pointing_game", label="pointing game (actor box)", direction="higher",
                 family="ground_truth", chance=_pointing_chance, needs="boxes",
                 description="share of frames with a box whose most relevant pixel is inside it")
def _pointing(s: ScoreInput) -> float | None:
    mask = box_mask(s)
    return None if mask is None else _finite(pointing_accuracy(s.pixel, mask))


def _evidence_share(s: ScoreInput) -> float | None:
    return None if s.truth is None or s.truth.evidence is None else float(np.mean(s.truth.evidence))


@register_metric("temporal_accuracy", label="relevance on the evidence frames", direction="higher",
                 family="ground_truth", chance=_evidence_share, needs="evidence",
                 description="share of the positive frame relevance on the frames that decide the class")
def _temporal(s: ScoreInput) -> float | None:
    if s.truth is None or s.truth.evidence is None:
        return None
    return _finite(temporal_accuracy(s.frame_scores, s.truth.evidence))


# ------------------------------------------------------------------------ randomisation
@register_metric("mprt", label="MPRT: Spearman after full randomisation", direction="lower",
                 family="randomisation",
                 description="Spearman of |map| with |map| of the last randomised model of the cascade")
def _mprt(s: ScoreInput) -> float | None:
    return _finite(spearman(np.abs(s.pixel), np.abs(s.randomised[-1]))) if s.randomised else None


@register_metric("emprt", label="eMPRT: relative entropy rise", direction="higher", family="randomisation",
                 description="relative rise of the map's histogram entropy after full randomisation")
def _emprt(s: ScoreInput) -> float | None:
    return _finite(emprt(s.pixel, s.randomised[-1])) if s.randomised else None


@register_metric("smprt", label="sMPRT: Spearman of smoothed maps", direction="lower", family="randomisation",
                 description="Spearman of |map averaged over noisy inputs| before and after full randomisation")
def _smprt(s: ScoreInput) -> float | None:
    if s.smooth is None or s.smooth_randomised is None:
        return None
    return _finite(smprt(s.smooth, s.smooth_randomised))


# ------------------------------------------------------------------------ control
@register_metric("input_control", label="control: Spearman with the input's magnitude", direction="none",
                 family="control", description="how much the map ranks pixels as the input's magnitude does")
def _control(s: ScoreInput) -> float | None:
    return None if s.video is None else _finite(input_control(s.pixel, s.video))
