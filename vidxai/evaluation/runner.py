"""Evaluate attribution methods on a list of clips: flipping/AOPC, ground truth, randomisation, statistics.

:func:`evaluate` is the library entry point (plain arguments, no config objects): it takes a network in
eval mode, clips with their ground truth and a list of method names, and returns one result dict. The explain
pipeline (``evaluate=true``) loads the data, calls it and writes the files and figures.

What is scored comes from the metric registry (:data:`vidxai.evaluation.registry.METRICS`), what is compared
from the method registry; the statistics (:mod:`vidxai.evaluation.stats`) compare every method with the best
one on the same videos. Method-independent perturbation orders (random, last frame first, first frame first,
random regions) are drawn once per video. A method that does not apply to the network is skipped with the
reason; one that raises is reported with its error and skipped; the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidxai.data.ground_truth import ClipTruth
from vidxai.evaluation import scores as _scores  # noqa: F401 (registers the built-in metrics)
from vidxai.evaluation.methods import Method, build_method, validate_method_names
from vidxai.evaluation.perturbation import (
    BASELINES,
    aopc,
    flipping_curves,
    frame_masks,
    frame_order,
    frame_scores,
    region_grid,
    region_masks,
    region_order,
    region_scores,
    region_steps,
    replacement,
)
from vidxai.evaluation.randomisation_pass import randomisation_pass
from vidxai.evaluation.registry import METRICS, BuildContext, NotApplicable, ScoreInput
from vidxai.evaluation.summary import aggregate
from vidxai.models.contract import Stage, explain_stages

__all__ = ["CURVES", "ORDER_SCORES", "EvalClip", "EvalSettings", "evaluate"]

log = logging.getLogger(__name__)

#: Flipping curves: (curve name, does the order depend on the method?).
CURVES: tuple[tuple[str, bool], ...] = (
    ("frame_morf", True),
    ("frame_lerf", True),
    ("frame_random", False),
    ("frame_last_first", False),
    ("frame_first_first", False),
    ("region_morf", True),
    ("region_random", False),
)
#: AOPC of the method-independent orders (references, reported per video and in ``orders``).
ORDER_SCORES: dict[str, str] = {c: c.replace("frame_", "frame_aopc_").replace("region_", "region_aopc_")
                                for c, per_method in CURVES if not per_method}


@dataclass
class EvalClip:
    """One clip to evaluate on: the model input ``(T, C, H, W)`` (on the model's device) and where it came from."""

    video: Tensor
    source: str
    label: int | None = None
    truth: ClipTruth | None = None


@dataclass
class EvalSettings:
    """Every choice of the evaluation (all reported in ``settings``)."""

    baseline: str = "mean"
    blur_sigma: float = 2.0
    road_noise: float = 0.01
    batch_size: int = 32
    region_size: int = 8
    region_step: float = 0.05
    region_max: float = 0.5
    ig_steps: int = 16
    seed: int = 0
    mprt_videos: int = 1
    randomisation_videos: int = 10
    mprt_steps: int | None = None
    mprt_granularity: str = "block"
    smprt_samples: int = 0
    smprt_noise: float = 0.1
    n_boot: int = 2000
    alpha: float = 0.05
    chunk_frames: int | None = None
    target: int | None = None
    #: ``lstm_eps`` / ``bias_factor`` / ``lstm_rule`` of the LRP methods (unset: ``LRPConfig``'s defaults)
    recurrent: dict[str, Any] = field(default_factory=dict)
    #: extra parameters per LRP rule (e.g. input bounds of a z^B first layer)
    rule_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline={self.baseline!r}; choose one of {sorted(BASELINES)}")
        for key in ("batch_size", "region_size", "ig_steps", "n_boot"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        if not 0 < self.region_step <= self.region_max <= 1:
            raise ValueError(f"need 0 < region_step <= region_max <= 1, got region_step={self.region_step}, "
                             f"region_max={self.region_max}")
        for key, name in (("mprt_videos", "mprt.videos"), ("randomisation_videos", "mprt.final_videos"),
                          ("smprt_samples", "mprt.smprt_samples")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.mprt_granularity not in ("block", "layer"):
            raise ValueError(f"mprt.granularity={self.mprt_granularity!r}; choose block or layer")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def context(self) -> BuildContext:
        """The :class:`~vidxai.evaluation.registry.BuildContext` of the method builders."""
        from vidxai.xai.config import LRPConfig

        lrp = LRPConfig.from_dict(self.recurrent, chunk_frames=self.chunk_frames)
        return BuildContext(replacement=self.replace, batch_size=self.batch_size, ig_steps=self.ig_steps,
                            seed=self.seed, lrp=lrp, rule_params=self.rule_params)

    def replace(self, clip: Tensor) -> Tensor:
        """The replacement clip of ``baseline`` (whole frames)."""
        return replacement(clip, self.baseline, self.blur_sigma, self.road_noise)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def build_methods(names: Sequence[str], net: nn.Module, s: EvalSettings
                  ) -> tuple[dict[str, Method], dict[str, str], dict[str, str]]:
    """``(methods, skipped reasons, build errors)`` for ``names`` on ``net``."""
    methods, skipped, errors = {}, {}, {}
    ctx = s.context()
    for name in names:
        try:
            methods[name] = build_method(name, net, ctx)
        except NotApplicable as exc:
            skipped[name] = str(exc)
        except Exception as exc:  # a method that cannot handle this model is reported and skipped
            errors[name] = _error(exc)
    return methods, skipped, errors


def _map(method: Method, clip: Tensor, target: int, key: int) -> np.ndarray:
    pixel = method(clip, target, key).numpy()
    if not np.isfinite(pixel).all():
        raise FloatingPointError("the map has non-finite values")
    return pixel


@dataclass
class _State:
    """What the per-video loop accumulates."""

    names: list[str]
    errors: dict[str, str]
    times: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    chance_rows: list[dict[str, float | None]] = field(default_factory=list)
    curve_sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    kept: list[tuple[int, int, dict[str, np.ndarray]]] = field(default_factory=list)


def _masks(x: Tensor, rng: np.random.Generator, s: EvalSettings) -> tuple[dict[str, Tensor], Any]:
    t, _, h, w = x.shape
    n_regions = int(np.prod(region_grid((t, h, w), s.region_size)))
    counts = region_steps(n_regions, s.region_step, s.region_max)
    frame_tb, region_tb = rng.permutation(t), rng.permutation(n_regions)
    masks = {
        "frame_random": frame_masks(rng.permutation(t), (t, h, w)),
        "frame_last_first": frame_masks(np.arange(t)[::-1], (t, h, w)),
        "frame_first_first": frame_masks(np.arange(t), (t, h, w)),
        "region_random": region_masks(rng.permutation(n_regions), (t, h, w), s.region_size, counts),
    }

    def add(name: str, pixel: np.ndarray) -> None:
        fs = frame_scores(pixel)
        masks[f"{name}\tframe_morf"] = frame_masks(frame_order(fs, frame_tb, True), (t, h, w))
        masks[f"{name}\tframe_lerf"] = frame_masks(frame_order(fs, frame_tb, False), (t, h, w))
        order = region_order(region_scores(pixel, s.region_size), region_tb)
        masks[f"{name}\tregion_morf"] = region_masks(order, (t, h, w), s.region_size, counts)

    return masks, add


def _score_video(net: nn.Module, i: int, clip: EvalClip, built: dict[str, Method], s: EvalSettings,
                 stages: Sequence[Stage] | None, st: _State) -> None:
    x = clip.video
    with torch.no_grad():
        logits = net(x[None])[0].double().cpu().numpy()
    prediction = int(np.argmax(logits))
    target = prediction if s.target is None else int(s.target)
    masks, add = _masks(x, np.random.default_rng([s.seed, i]), s)
    maps: dict[str, np.ndarray] = {}
    for name, method in built.items():
        if name in st.errors:
            continue
        t0 = time.perf_counter()
        try:
            maps[name] = _map(method, x, target, i)
        except Exception as exc:
            st.errors[name] = _error(exc)
            log.warning("method %s failed on %s and is skipped: %s", name, clip.source, st.errors[name])
            continue
        st.times[name] += time.perf_counter() - t0
        add(name, maps[name])
    base = s.replace(x) if s.baseline != "road" else _road_imputer(x, s, i)
    curves = flipping_curves(net, x, base, target, masks, s.batch_size, stages)
    video = x.detach().double().cpu().numpy()
    chance: dict[str, float | None] = {}
    for name, pixel in maps.items():
        mine = {c: curves[f"{name}\t{c}" if per else c] for c, per in CURVES}
        si = ScoreInput(pixel, mine, clip.truth, video)
        row: dict[str, Any] = {"video": clip.source, "method": name, "label": clip.label, "target": target,
                               "prediction": prediction}
        row.update({m.name: m.score(si) for m in METRICS.values() if m.family != "randomisation"})
        row.update({k: aopc(mine[c]) for c, k in ORDER_SCORES.items()})
        st.rows.append(row)
        if not chance:
            chance = {m.name: m.chance(si) for m in METRICS.values() if m.chance is not None}
        acc = st.curve_sums.setdefault(name, {})
        for c in mine:
            acc[c] = acc.get(c, 0.0) + mine[c]
    st.chance_rows.append(chance)
    if i < max(s.mprt_videos, s.randomisation_videos):
        st.kept.append((i, target, maps))


def _road_imputer(x: Tensor, s: EvalSettings, i: int) -> Any:
    from vidxai.evaluation.road import RoadImputer

    return RoadImputer(x, noise=s.road_noise, seed=(s.seed, i))


def evaluate(
    net: nn.Module, clips: Sequence[EvalClip], methods: Sequence[str], settings: EvalSettings
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``clips`` with ``net`` (eval mode, only read). See the module docstring.

    Returns a dict with ``settings``, ``metrics`` (per score: label, direction, family, chance, or the reason
    it was left out), ``chance``, ``methods`` (per name: mean scores, ``ci`` (95%), ``sem``, ``time_s``,
    ``mprt_spearman`` per cascade step; or ``skipped`` with ``reason`` / ``error``), ``comparisons``
    (per score and method: ``diff``, ``ci_low``, ``ci_high``, ``p``, ``tied_with_best``), ``vs_random``,
    ``verdict``, ``orders``, ``curves``, ``mprt``, ``timing`` and ``rows`` (one dict per video and method).
    """
    s = settings
    s.check()
    names = list(dict.fromkeys(methods))
    validate_method_names(names)
    if not clips:
        raise ValueError("no clips to evaluate")
    built, skipped, errors = build_methods(names, net, s)
    try:
        stages: tuple[Stage, ...] | None = explain_stages(net)  # per-frame CNN: each distinct frame runs once
    except TypeError:
        stages = None  # a network without the contract: whole clips through its forward
    st = _State(names, errors, dict.fromkeys(names, 0.0))
    start = time.perf_counter()
    for i, clip in enumerate(clips):
        _score_video(net, i, clip, built, s, stages, st)
        if (i + 1) % 5 == 0 or i + 1 == len(clips):
            log.info("evaluated %d/%d videos (%.0f s)", i + 1, len(clips), time.perf_counter() - start)
    perturbation_s = time.perf_counter() - start
    live = [n for n in names if n in built and n not in errors]
    rand = randomisation_pass(net, clips, st.kept, {n: built[n] for n in live}, s, st.rows)
    for name, err in rand["errors"].items():
        errors.setdefault(name, f"randomisation test: {err}")
    result = aggregate(st, names, built, skipped, errors, rand, s, clips)
    result["settings"].update({**asdict(s), "perturbation_s": perturbation_s, "mprt_s": rand["time_s"],
                               "baseline_meaning": BASELINES[s.baseline]})
    result["timing"]["tests"]["perturbation_and_ground_truth"] = perturbation_s
    return result
