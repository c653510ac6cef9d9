"""The randomisation phase of :func:`vidxai.evaluation.evaluate`: MPRT along the cascade, eMPRT, sMPRT.

On the first ``mprt_videos`` clips, every method's map is recomputed on progressively randomised copies of
the network (:func:`vidxai.evaluation.mprt.randomised_cascade`); the Spearman of ``|map|`` with the original
after each step is the MPRT curve. The last model of the cascade (fully randomised unless ``mprt.steps``
caps it), on the first ``max(mprt_videos, randomisation_videos)`` clips, gives the registered randomisation
scores: ``mprt`` (last Spearman), ``emprt`` and, with
``smprt_samples`` > 0, ``smprt``: maps averaged over ``smprt_samples`` inputs (``smprt_samples - 1`` noisy
copies, the same noise draws for every method and for both models, seeded by ``(seed, video)``, and the
clean clip) on the original and the randomised model.

Each method explains the clips of a cascade step, and all noisy copies, in batches of ``batch_size`` clips
(:meth:`~vidxai.evaluation.methods.Method.many`): the same maps as clip by clip, in fewer, larger calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from vidxai.evaluation.core import EvalClip, EvalSettings, RunControl, build_methods, error_line, maps_of
from vidxai.evaluation.mprt import cascade_steps, randomised_cascade, spearman
from vidxai.evaluation.randomisation import noisy_copies
from vidxai.evaluation.registry import METRICS, ScoreInput

__all__ = ["randomisation_pass"]

log = logging.getLogger(__name__)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _step(name: str, built: dict, videos: list, clips: Mapping[int, EvalClip], last: dict, s: EvalSettings, out: dict
          ) -> list[float]:
    """Spearman of each video's original and randomised ``|map|`` (NaN where there is none); fills ``last``."""
    rho = {i: float("nan") for i, _, _ in videos}
    todo = [v for v in videos if name in v[2]]
    t0 = time.perf_counter()
    if name in built and name not in out["errors"] and todo:
        original = {i: maps[name] for i, _, maps in todo}
        try:
            pixels = maps_of(built[name], [clips[i].video for i, _, _ in todo], [t for _, t, _ in todo],
                           [i for i, _, _ in todo], s.batch_size)
            for (i, _, _), pixel in zip(todo, pixels, strict=True):
                last[(i, name)] = pixel
                rho[i] = spearman(np.abs(original[i]), np.abs(pixel))
        except Exception as exc:
            out["errors"][name] = error_line(exc)
    out["method_s"][name] = out["method_s"].get(name, 0.0) + time.perf_counter() - t0
    return [rho[i] for i, _, _ in videos]


class _Units:
    """The journal of the randomisation pass (one record per cascade step and method, one per method's sMPRT,
    one with the scores at the end) and its progress; without a journal only the progress."""

    def __init__(self, control: RunControl, total: int) -> None:
        self.control, self.journal, self.total, self.done = control, control.journal, total, 0
        records = list(self.journal.of_kind("randomisation")) if self.journal is not None else []
        self.records = {(r["unit"], r["method"]): r for r in records}

    def get(self, unit: str, name: str) -> dict[str, Any] | None:
        return self.records.get((unit, name))

    def start(self) -> None:
        self.control.check()

    def put(self, unit: str, name: str, record: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        if self.journal is not None:
            if arrays is not None:
                self.journal.save_arrays(self._name(unit, name), arrays)
            self.journal.append({"kind": "randomisation", "unit": unit, "method": name, **record})

    def arrays(self, unit: str, name: str) -> dict[str, np.ndarray]:
        return self.journal.load_arrays(self._name(unit, name))

    def _name(self, unit: str, name: str) -> str:
        """``randomisation/<journal>/<unit>-<method>``: each process's own (their videos differ)."""
        return f"randomisation/{self.journal.path.stem}/{unit}-{name}"

    def step_done(self, phase: str) -> None:
        self.done += 1
        self.control.progress(phase, self.done, self.total)


def _cascade(net: nn.Module, clips: Mapping[int, EvalClip], kept: list[tuple[int, int, dict[str, np.ndarray]]],
             methods: dict[str, Any], s: EvalSettings, by_video: dict, out: dict[str, Any], units: _Units
             ) -> tuple[Any, dict, dict]:
    """Run the cascade; returns (last model, its methods, {(video, method): last randomised map}).

    Every step on the first ``mprt_videos`` clips (the curve), the last step on all ``kept`` clips; each
    method explains a step's clips in batches (:meth:`~vidxai.evaluation.methods.Method.many`). A step of a
    method the journal holds is read back (its Spearman values, its error, the last step's maps).
    """
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
            unit = f"step{k}"
            record = units.get(unit, name)
            if record is None:
                units.start()
                values = _step(name, built, videos, clips, last, s, out)
                mine = {f"v{i}": v for (i, n), v in last.items() if n == name}  # what the scores will read
                units.put(unit, name, {"step": step, "rho": values, "error": out["errors"].get(name),
                                       "seconds": out["method_s"].get(name, 0.0)}, mine if k == n_steps - 1 else None)
            else:
                values = [float("nan") if v is None else v for v in record["rho"]]
                if record["error"] is not None:
                    out["errors"][name] = record["error"]
                out["method_s"][name] = record["seconds"]
                if k == n_steps - 1:
                    last.update({(int(a[1:]), name): v for a, v in units.arrays(unit, name).items()})
            for (i, _, _), rho in zip(videos, values, strict=True):
                row = by_video.get((clips[i].source, name))
                if row is not None:
                    row[f"mprt/{step}"] = _finite(rho)
            units.step_done(f"randomisation step {k + 1}/{n_steps}")
        log.info("randomisation step %d/%d (%s) done", k + 1, n_steps, step)
    return model, built, last


def _smooth(clips: Mapping[int, EvalClip], kept: list, methods: dict, built: dict, last: dict, s: EvalSettings,
            out: dict, units: _Units) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """Per (video, method): the maps averaged over the clean clip and its noisy copies, original and randomised
    model. The copies are drawn once per video (seeded by ``(seed, video)``), the same for every method and both
    models; each method explains all copies of all videos in batches."""
    noisy: dict[int, Any] = {}
    smooth = {}
    for name in methods:
        if name not in built or name in out["errors"]:
            units.step_done("sMPRT")
            continue
        record = units.get("smprt", name)
        if record is not None:
            if record["error"] is not None:
                out["errors"][name] = record["error"]
            else:
                arrays = units.arrays("smprt", name)
                smooth.update({(int(a[1:]), name): (v, arrays[f"r{a[1:]}"]) for a, v in arrays.items()
                               if a.startswith("o")})
            out["method_s"][name] = record["seconds"]
            units.step_done("sMPRT")
            continue
        units.start()
        if not noisy:
            noisy = {i: noisy_copies(clips[i].video, s.smprt_samples, s.smprt_noise,
                                     np.random.default_rng([int(s.seed), i, 1])) for i, _, _ in kept}
        videos = [(i, target, maps) for i, target, maps in kept if (i, name) in last]
        jobs = [(i, target, k) for i, target, _ in videos for k in range(s.smprt_samples - 1)]
        cleans = ({i: maps[name] for i, _, maps in videos}, {i: last[(i, name)] for i, _, _ in videos})
        t0, pair = time.perf_counter(), []
        try:
            for method, clean in zip((methods[name], built[name]), cleans, strict=True):
                total = {i: np.array(c, dtype=np.float64) for i, c in clean.items()}
                pixels = maps_of(method, [noisy[i][k] for i, _, k in jobs], [t for _, t, _ in jobs],
                               [i for i, _, _ in jobs], s.batch_size)
                for (i, _, _), pixel in zip(jobs, pixels, strict=True):
                    total[i] += pixel
                pair.append({i: v / s.smprt_samples for i, v in total.items()})
            smooth.update({(i, name): (pair[0][i], pair[1][i]) for i in pair[0]})
        except Exception as exc:
            out["errors"][name] = error_line(exc)
        out["method_s"][name] = out["method_s"].get(name, 0.0) + time.perf_counter() - t0
        arrays = None if name in out["errors"] else \
            {**{f"o{i}": v for i, v in pair[0].items()}, **{f"r{i}": v for i, v in pair[1].items()}}
        units.put("smprt", name, {"error": out["errors"].get(name), "seconds": out["method_s"][name]}, arrays)
        units.step_done("sMPRT")
    return smooth


def randomisation_pass(net: nn.Module, clips: Mapping[int, EvalClip],
                       kept: list[tuple[int, int, dict[str, np.ndarray]]], methods: dict[str, Any], s: EvalSettings,
                       rows: list[dict[str, Any]], control: RunControl | None = None) -> dict[str, Any]:
    """Fill ``rows`` with ``mprt/<step>`` and the randomisation scores; return steps, errors, timings.

    ``clips[i]``: the clip of video ``i`` for every ``i`` of ``kept`` (the per-step means over the first
    ``mprt_videos`` videos are computed from the rows, by :func:`vidxai.evaluation.shards.combine`).
    ``control``: the journal each step of each method is written to (and read back from, after an
    interruption), the stop check before each of them, the progress (:class:`~vidxai.evaluation.core.RunControl`).
    """
    control = control or RunControl()
    out: dict[str, Any] = {"steps": [], "errors": {}, "time_s": 0.0, "smprt_s": 0.0,
                           "videos": len(kept), "method_s": {}}
    if not kept or not methods:
        return out
    start = time.perf_counter()
    by_video = {(r["video"], r["method"]): r for r in rows}
    n_steps = len(cascade_steps(net, s.mprt_granularity)[: s.mprt_steps])
    units = _Units(control, len(methods) * (n_steps + (s.smprt_samples > 0)))
    _, built, last = _cascade(net, clips, kept, methods, s, by_video, out, units)
    t_smooth = time.perf_counter()
    smooth = _smooth(clips, kept, methods, built, last, s, out, units) if s.smprt_samples > 0 else {}
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
