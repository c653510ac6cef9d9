"""Evaluate attribution methods on a list of clips: flipping/AOPC, ground-truth scores, randomisation.

:func:`evaluate` is the library entry point (plain arguments, no config objects): it takes a network in
eval mode, clips with their ground truth and a list of method names, and returns one result dict
(settings, chance levels, per-method means, mean flipping curves, per-video rows). The explain pipeline
(``evaluate=true``) loads the data, calls it and writes the files and figures.

Method-independent perturbation orders (random, last frame first, first frame first, random regions) are
drawn once per video and their curve is reported for every method. A method that raises is reported with
its error and skipped; the others go on.
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
from vidxai.evaluation.methods import Method, build_method, validate_method_names
from vidxai.evaluation.mprt import randomised_cascade, spearman
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
from vidxai.models.contract import Stage, explain_stages
from vidxai.xai.metrics import box_masks, mass_accuracy, pointing_accuracy, rank_accuracy, temporal_accuracy

__all__ = [
    "CURVES",
    "GROUND_TRUTH_SCORES",
    "PERTURBATION_SCORES",
    "TABLE_COLUMNS",
    "EvalClip",
    "EvalSettings",
    "evaluate",
    "markdown_table",
    "summary_table",
]

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
#: AOPC score of each curve: ``frame_morf`` -> ``frame_aopc_morf``.
PERTURBATION_SCORES: dict[str, str] = {c: c.replace("frame_", "frame_aopc_").replace("region_", "region_aopc_")
                                       for c, _ in CURVES}
GROUND_TRUTH_SCORES: tuple[str, ...] = ("mass_accuracy", "rank_accuracy", "pointing_game", "temporal_accuracy")


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
    batch_size: int = 32
    region_size: int = 8
    region_step: float = 0.05
    region_max: float = 0.5
    ig_steps: int = 16
    seed: int = 0
    mprt_videos: int = 4
    mprt_steps: int | None = None
    mprt_granularity: str = "block"
    chunk_frames: int | None = None
    target: int | None = None
    #: ``lstm_eps`` / ``bias_factor`` / ``lstm_rule`` of the LRP methods (unset: ``VideoLRP``'s defaults)
    recurrent: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline={self.baseline!r}; choose one of {sorted(BASELINES)}")
        for key in ("batch_size", "region_size", "ig_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        if not 0 < self.region_step <= self.region_max <= 1:
            raise ValueError(f"need 0 < region_step <= region_max <= 1, got region_step={self.region_step}, "
                             f"region_max={self.region_max}")
        if isinstance(self.mprt_videos, bool) or not isinstance(self.mprt_videos, int) or self.mprt_videos < 0:
            raise ValueError(f"mprt.videos must be an integer >= 0, got {self.mprt_videos!r}")
        if self.mprt_granularity not in ("block", "layer"):
            raise ValueError(f"mprt.granularity={self.mprt_granularity!r}; choose block or layer")


def _nanmean(values: Sequence[float]) -> float | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _sem(values: Sequence[float]) -> float | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _ground_truth(pixel: np.ndarray, truth: ClipTruth | None) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(GROUND_TRUTH_SCORES)
    if truth is None:
        return out
    if truth.boxes is not None:
        mask = box_masks(truth.boxes, pixel.shape[1:])
        if mask.any():
            out["mass_accuracy"] = _finite(mass_accuracy(pixel, mask))
            out["rank_accuracy"] = _finite(rank_accuracy(pixel, mask))
            out["pointing_game"] = _finite(pointing_accuracy(pixel, mask))
    if truth.evidence is not None:
        out["temporal_accuracy"] = _finite(temporal_accuracy(frame_scores(pixel), truth.evidence))
    return out


def _chance(truth: ClipTruth | None, shape: tuple[int, int, int]) -> dict[str, float | None]:
    """What a uniform map scores on this clip."""
    out: dict[str, float | None] = dict.fromkeys(GROUND_TRUTH_SCORES)
    if truth is None:
        return out
    if truth.boxes is not None:
        mask = box_masks(truth.boxes, shape[1:])
        if mask.any():
            out["mass_accuracy"] = out["rank_accuracy"] = float(mask.mean())
            out["pointing_game"] = float(np.mean([m.mean() for m in mask if m.any()]))
    if truth.evidence is not None:
        out["temporal_accuracy"] = float(np.mean(truth.evidence))
    return out


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def _build(names: Sequence[str], net: nn.Module, s: EvalSettings) -> tuple[dict[str, Method], dict[str, str]]:
    methods, errors = {}, {}

    def repl(clip: Tensor) -> Tensor:
        return replacement(clip, s.baseline, s.blur_sigma)

    for name in names:
        try:
            methods[name] = build_method(name, net, replacement=repl, batch_size=s.batch_size, ig_steps=s.ig_steps,
                                         seed=s.seed, chunk_frames=s.chunk_frames, recurrent=s.recurrent)
        except Exception as exc:  # a method that cannot handle this model is reported and skipped
            errors[name] = _error(exc)
    return methods, errors


def _map(method: Method, clip: Tensor, target: int, key: int) -> np.ndarray:
    pixel = method(clip, target, key).numpy()
    if not np.isfinite(pixel).all():
        raise FloatingPointError("the map has non-finite values")
    return pixel


def evaluate(
    net: nn.Module, clips: Sequence[EvalClip], methods: Sequence[str], settings: EvalSettings
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``clips`` with ``net`` (eval mode, only read). See the module docstring.

    Returns a dict with ``settings``, ``chance``, ``methods`` (per name: mean scores, their standard errors
    ``sem``, ``time_s``, ``mprt_spearman``, or ``error`` when it failed), ``curves`` (per name and curve:
    the mean target logit per step), ``mprt`` (the cascade's step names and the number of videos) and
    ``rows`` (one dict per video and method with every per-video score).
    """
    s = settings
    s.check()
    names = list(dict.fromkeys(methods))
    validate_method_names(names)
    if not clips:
        raise ValueError("no clips to evaluate")
    built, errors = _build(names, net, s)
    try:
        stages: tuple[Stage, ...] | None = explain_stages(net)  # per-frame CNN: each distinct frame runs once
    except TypeError:
        stages = None  # a network without the contract: whole clips through its forward
    times = dict.fromkeys(names, 0.0)
    sums: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    counts = dict.fromkeys(names, 0)
    rows: list[dict[str, Any]] = []
    chance_rows: list[dict[str, float | None]] = []
    kept: list[tuple[int, int, dict[str, np.ndarray]]] = []  # (clip index, target, maps) for the MPRT
    start = time.perf_counter()
    for i, clip in enumerate(clips):
        x = clip.video
        t, _, h, w = x.shape
        with torch.no_grad():
            logits = net(x[None])[0].double().cpu().numpy()
        prediction = int(np.argmax(logits))
        target = prediction if s.target is None else int(s.target)
        base = replacement(x, s.baseline, s.blur_sigma)
        rng = np.random.default_rng([s.seed, i])
        n_regions = int(np.prod(region_grid((t, h, w), s.region_size)))
        counts_r = region_steps(n_regions, s.region_step, s.region_max)
        frame_tb, region_tb = rng.permutation(t), rng.permutation(n_regions)
        masks = {
            "frame_random": frame_masks(rng.permutation(t), (t, h, w)),
            "frame_last_first": frame_masks(np.arange(t)[::-1], (t, h, w)),
            "frame_first_first": frame_masks(np.arange(t), (t, h, w)),
            "region_random": region_masks(rng.permutation(n_regions), (t, h, w), s.region_size, counts_r),
        }
        maps: dict[str, np.ndarray] = {}
        for name, method in built.items():
            if name in errors:
                continue
            t0 = time.perf_counter()
            try:
                pixel = _map(method, x, target, i)
            except Exception as exc:
                errors[name] = _error(exc)
                log.warning("method %s failed on %s and is skipped: %s", name, clip.source, errors[name])
                continue
            times[name] += time.perf_counter() - t0
            maps[name] = pixel
            fs = frame_scores(pixel)
            masks[f"{name}\tframe_morf"] = frame_masks(frame_order(fs, frame_tb, True), (t, h, w))
            masks[f"{name}\tframe_lerf"] = frame_masks(frame_order(fs, frame_tb, False), (t, h, w))
            order = region_order(region_scores(pixel, s.region_size), region_tb)
            masks[f"{name}\tregion_morf"] = region_masks(order, (t, h, w), s.region_size, counts_r)
        curves = flipping_curves(net, x, base, target, masks, s.batch_size, stages)
        chance_rows.append(_chance(clip.truth, (t, h, w)))
        for name, pixel in maps.items():
            row: dict[str, Any] = {"video": clip.source, "method": name, "label": clip.label, "target": target,
                                   "prediction": prediction}
            for curve, per_method in CURVES:
                c = curves[f"{name}\t{curve}" if per_method else curve]
                row[PERTURBATION_SCORES[curve]] = aopc(c)
                acc = sums[name]
                acc[curve] = acc.get(curve, 0.0) + c
            row.update(_ground_truth(pixel, clip.truth))
            counts[name] += 1
            rows.append(row)
        if i < s.mprt_videos:
            kept.append((i, target, maps))
        if (i + 1) % 5 == 0 or i + 1 == len(clips):
            log.info("evaluated %d/%d videos (%.0f s)", i + 1, len(clips), time.perf_counter() - start)
    perturbation_s = time.perf_counter() - start

    mprt_steps, mprt_scores, mprt_s = _mprt(net, clips, kept, [n for n in names if n not in errors], s, errors, rows)

    result_methods: dict[str, Any] = {}
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        if name in errors and not mine:
            result_methods[name] = {"error": errors[name], "skipped": True}
            continue
        keys = list(PERTURBATION_SCORES.values()) + list(GROUND_TRUTH_SCORES)
        entry: dict[str, Any] = {k: _nanmean([r[k] for r in mine]) for k in keys}
        entry["sem"] = {k: _sem([r[k] for r in mine]) for k in keys}
        entry["mprt_spearman"] = mprt_scores.get(name)
        entry["time_s"] = times[name]
        entry["videos"] = len(mine)
        entry["settings"] = built[name].settings if name in built else {}
        if name in errors:
            entry["error"] = errors[name]
        result_methods[name] = entry
    return {
        "settings": {**asdict(s), "videos": len(clips), "frames": int(clips[0].video.shape[0]),
                     "size": list(clips[0].video.shape[-2:]), "baseline_meaning": BASELINES[s.baseline],
                     "aopc": "mean over steps k=0..K of f(x) - f(x^(k)), f = target logit, step 0 = intact clip",
                     "ties": "broken by one seeded random order per video, shared by all methods",
                     "ground_truth_ties": "tied values scored by their expectation under a random tie-break",
                     "target": "predicted class" if s.target is None else int(s.target),
                     "perturbation_s": perturbation_s, "mprt_s": mprt_s},
        "chance": {k: _nanmean([c[k] for c in chance_rows]) for k in GROUND_TRUTH_SCORES},
        "ground_truth_videos": {k: sum(c[k] is not None for c in chance_rows) for k in GROUND_TRUTH_SCORES},
        "methods": result_methods,
        "curves": {n: {c: (v / counts[n]).tolist() for c, v in sums[n].items()} for n in names if counts[n]},
        "mprt": {"steps": mprt_steps, "videos": len(kept)},
        "rows": rows,
    }


def _mprt(
    net: nn.Module,
    clips: Sequence[EvalClip],
    kept: list[tuple[int, int, dict[str, np.ndarray]]],
    names: list[str],
    s: EvalSettings,
    errors: dict[str, str],
    rows: list[dict[str, Any]],
) -> tuple[list[str], dict[str, list[float | None]], float]:
    """Spearman of |map| under the cascade for the first ``mprt_videos`` clips; also fills the rows."""
    if not kept or not names:
        return [], {}, 0.0
    start = time.perf_counter()
    steps: list[str] = []
    per: dict[str, list[list[float]]] = {n: [] for n in names}
    mprt_errors: dict[str, str] = {}
    by_video = {(r["video"], r["method"]): r for r in rows}
    for step, model in randomised_cascade(net, seed=s.seed, max_steps=s.mprt_steps,
                                              granularity=s.mprt_granularity):
        steps.append(step)
        built, build_errors = _build([n for n in names if n not in mprt_errors], model, s)
        mprt_errors.update(build_errors)
        for name in names:
            values: list[float] = []
            for i, target, maps in kept:
                if name in mprt_errors or name not in maps:
                    values.append(float("nan"))
                    continue
                try:
                    new = _map(built[name], clips[i].video, target, i)
                except Exception as exc:
                    mprt_errors[name] = _error(exc)
                    values.append(float("nan"))
                    continue
                rho = spearman(np.abs(maps[name]), np.abs(new))
                values.append(rho)
                row = by_video.get((clips[i].source, name))
                if row is not None:
                    row[f"mprt/{step}"] = _finite(rho)
            per[name].append(values)
        log.info("randomisation step %d (%s) done (%.0f s)", len(steps), step, time.perf_counter() - start)
    for name, err in mprt_errors.items():
        errors.setdefault(name, f"randomisation test: {err}")
    scores = {n: [_nanmean(v) for v in per[n]] for n in names}
    return steps, scores, time.perf_counter() - start


#: Columns of the summary table (one row per method), after ``method``.
TABLE_COLUMNS: tuple[str, ...] = (
    *PERTURBATION_SCORES.values(),
    *GROUND_TRUTH_SCORES,
    "mprt_spearman_last",
    "time_s",
)


def summary_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)``: one row per method with its mean scores (``None`` where absent), errors last."""
    columns = ["method", *TABLE_COLUMNS, "error"]
    rows = []
    for name, m in result["methods"].items():
        mprt = m.get("mprt_spearman") or []
        values = {**m, "mprt_spearman_last": mprt[-1] if mprt else None}
        rows.append([name, *(values.get(c) for c in TABLE_COLUMNS), m.get("error")])
    return columns, rows


def markdown_table(result: dict[str, Any], digits: int = 3) -> str:
    """The summary table as Markdown, with the chance levels as a last row."""
    columns, rows = summary_table(result)
    columns = columns[:-1]

    def fmt(v: Any) -> str:
        return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if row[-1] and all(v is None for v in row[1:-1]):
            lines.append(f"| {row[0]} | failed: {row[-1]} |")
            continue
        lines.append("| " + " | ".join(fmt(v) for v in row[:-1]) + " |")
    chance = result.get("chance", {})
    lines.append("| chance | " + " | ".join(fmt(chance.get(c)) if c in chance else "" for c in columns[1:]) + " |")
    return "\n".join(lines)
