"""The randomisation phase of :func:`vidxai.evaluation.evaluate`: MPRT along the cascade, eMPRT, sMPRT.

On the first ``mprt_videos`` clips, every method's map is recomputed on progressively randomised copies of
the network (:func:`vidxai.evaluation.mprt.randomised_cascade`); the Spearman of ``|map|`` with the original
after each step is the MPRT curve. The last model of the cascade (fully randomised unless ``mprt.steps``
caps it), on the first ``max(mprt_videos, randomisation_videos)`` clips, gives the registered randomisation
scores: ``mprt`` (last Spearman), ``emprt`` and, with
``smprt_samples`` > 0, ``smprt``: maps averaged over ``smprt_samples`` inputs (``smprt_samples - 1`` noisy
copies, the same noise draws for every method and for both models, seeded by ``(seed, video)``, and the
clean clip) on the original and the randomised model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from vidxai.evaluation.mprt import cascade_steps, randomised_cascade, spearman
from vidxai.evaluation.randomisation import smooth_map
from vidxai.evaluation.registry import METRICS, ScoreInput

__all__ = ["randomisation_pass"]

log = logging.getLogger(__name__)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _cascade(net: nn.Module, clips: Mapping[int, Any], kept: list[tuple[int, int, dict[str, np.ndarray]]],
             methods: dict[str, Any], s: Any, by_video: dict, out: dict[str, Any]) -> tuple[Any, dict, dict]:
    """Run the cascade; returns (last model, its methods, {(video, method): last randomised map}).

    Every step on the first ``mprt_videos`` clips (the curve), the last step on all ``kept`` clips.
    """
    from vidxai.evaluation.runner import _error, _map, build_methods

    last: dict[tuple[int, str], np.ndarray] = {}
    n_steps = len(cascade_steps(net, s.mprt_granularity)[: s.mprt_steps])
    model, built = None, {}
    cascade = randomised_cascade(net, seed=s.seed, max_steps=s.mprt_steps, granularity=s.mprt_granularity)
    for k, (step, model) in enumerate(cascade):
        out["steps"].append(step)
        videos = kept if k == n_steps - 1 else [v for v in kept if v[0] < s.mprt_videos]
        built, skipped, errors = build_methods([n for n in methods if n not in out["errors"]], model, s)
        out["errors"].update({**skipped, **errors})
        for name in methods:
            for i, target, maps in videos:
                rho, t0 = float("nan"), time.perf_counter()
                if name in built and name not in out["errors"] and name in maps:
                    try:
                        last[(i, name)] = _map(built[name], clips[i].video, target, i)
                        rho = spearman(np.abs(maps[name]), np.abs(last[(i, name)]))
                    except Exception as exc:
                        out["errors"][name] = _error(exc)
                out["method_s"][name] = out["method_s"].get(name, 0.0) + time.perf_counter() - t0
                row = by_video.get((clips[i].source, name))
                if row is not None:
                    row[f"mprt/{step}"] = _finite(rho)
        log.info("randomisation step %d/%d (%s) done", k + 1, n_steps, step)
    return model, built, last


def _smooth(clips: Mapping[int, Any], kept: list, methods: dict, built: dict, last: dict, s: Any, out: dict
            ) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    from vidxai.evaluation.runner import _error

    smooth = {}
    for i, target, maps in kept:
        for name in methods:
            if name not in built or (i, name) not in last or name in out["errors"]:
                continue
            pair, t0 = [], time.perf_counter()
            for method, clean in ((methods[name], maps[name]), (built[name], last[(i, name)])):
                rng = np.random.default_rng([int(s.seed), int(i), 1])
                try:
                    pair.append(smooth_map(method, clips[i].video, target, i, s.smprt_samples, s.smprt_noise,
                                           rng, clean=clean))
                except Exception as exc:
                    out["errors"][name] = _error(exc)
                    break
            out["method_s"][name] = out["method_s"].get(name, 0.0) + time.perf_counter() - t0
            if len(pair) == 2:
                smooth[(i, name)] = (pair[0], pair[1])
    return smooth


def randomisation_pass(net: nn.Module, clips: Mapping[int, Any], kept: list[tuple[int, int, dict[str, np.ndarray]]],
                       methods: dict[str, Any], s: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fill ``rows`` with ``mprt/<step>`` and the randomisation scores; return steps, errors, timings.

    ``clips[i]``: the clip of video ``i`` for every ``i`` of ``kept`` (the per-step means over the first
    ``mprt_videos`` videos are computed from the rows, by :func:`vidxai.evaluation.shards.combine`).
    """
    out: dict[str, Any] = {"steps": [], "errors": {}, "time_s": 0.0, "smprt_s": 0.0,
                           "videos": len(kept), "method_s": {}}
    if not kept or not methods:
        return out
    start = time.perf_counter()
    by_video = {(r["video"], r["method"]): r for r in rows}
    _, built, last = _cascade(net, clips, kept, methods, s, by_video, out)
    t_smooth = time.perf_counter()
    smooth = _smooth(clips, kept, methods, built, last, s, out) if s.smprt_samples > 0 else {}
    out["smprt_s"] = time.perf_counter() - t_smooth
    metrics = [m for m in METRICS.values() if m.family == "randomisation"]
    for i, _, maps in kept:
        for name, pixel in maps.items():
            row = by_video.get((clips[i].source, name))
            if row is None or name not in methods:
                continue
            sm = smooth.get((i, name), (None, None))
            si = ScoreInput(pixel, randomised=[last[(i, name)]] if (i, name) in last else [], smooth=sm[0],
                            smooth_randomised=sm[1])
            row.update({m.name: m.score(si) for m in metrics})
    out["time_s"] = time.perf_counter() - start
    return out
