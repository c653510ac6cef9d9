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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidxai.evaluation import scores as _scores  # noqa: F401 (registers the built-in metrics)
from vidxai.evaluation.core import (
    EvalClip,
    EvalSettings,
    RunControl,
    Shard,
    build_methods,
    checked_map,
    error_line,
    maps_of,
)
from vidxai.evaluation.curves import CURVES, curve_masks, order_scores
from vidxai.evaluation.methods import Method, stages_or_none, validate_method_names
from vidxai.evaluation.perturbation import aopc, flipping_curves
from vidxai.evaluation.randomisation_pass import randomisation_pass
from vidxai.evaluation.registry import METRICS, ScoreInput
from vidxai.evaluation.shards import combine
from vidxai.models.contract import Stage

__all__ = ["CURVES", "EvalClip", "EvalSettings", "Shard", "VideoScorer", "build_methods", "evaluate"]

log = logging.getLogger(__name__)

def _map(method: Method, clip: Tensor, target: int, key: int) -> np.ndarray:
    return checked_map(method(clip, target, key))


@dataclass
class _State:
    """What the per-video loop of one process accumulates."""

    names: list[str]
    errors: dict[str, str]
    times: dict[str, float]
    failed: dict[str, int] = field(default_factory=dict)  # method -> the video (key) it first failed on
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # the video key of each row
    chance: dict[int, dict[str, float | None]] = field(default_factory=dict)
    curves: dict[int, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    kept: list[tuple[int, int, dict[str, np.ndarray]]] = field(default_factory=list)


def _method_maps(built: dict[str, Method], xs: Tensor, targets: list[int], keys: list[int], sources: list[str],
                 st: _State, control: RunControl) -> list[dict[str, np.ndarray]]:
    """Every live method's maps of the clips ``xs (B, T, C, H, W)`` (video ``keys[b]``), one call per method.

    A method that fails is skipped from the video it fails on: when the batched call raises (or gives a
    non-finite map), the batch is redone clip by clip, so the maps before that video are kept, as in a
    one-video-at-a-time run.
    """
    maps: list[dict[str, np.ndarray]] = [{} for _ in keys]
    for name, method in built.items():
        if name in st.errors:
            continue
        control.check()
        t0 = time.perf_counter()
        try:
            pixels = list(maps_of(method, list(xs), targets, keys, len(keys))) if len(keys) > 1 else None
        except Exception:  # found again below, clip by clip, with the video it fails on
            pixels = None
        if pixels is None:
            pixels = []
            for x, target, key, source in zip(xs, targets, keys, sources, strict=True):
                try:
                    pixels.append(_map(method, x, target, key))
                except Exception as exc:
                    st.errors[name], st.failed[name] = error_line(exc), key
                    log.warning("method %s failed on %s and is skipped: %s", name, source, st.errors[name])
                    break
        st.times[name] += time.perf_counter() - t0
        for b, pixel in enumerate(pixels):
            maps[b][name] = pixel
    return maps


def _score_videos(net: nn.Module, batch: list[tuple[int, EvalClip]], built: dict[str, Method], s: EvalSettings,
                  stages: Sequence[Stage] | None, st: _State, control: RunControl) -> list[dict[str, np.ndarray]]:
    """Perturbation curves and per-video scores of the videos of ``batch`` (``(key, clip)``, clips of one shape).

    The maps of the batch come from one call per method; everything random about a video is seeded by
    ``(seed, key)``, so a video scores the same in any batch and in any process. Returns each video's maps.
    """
    xs = torch.stack([clip.video for _, clip in batch])
    keys = [key for key, _ in batch]
    with torch.no_grad():
        logits = net(xs).double().cpu().numpy()
    predictions = [int(p) for p in np.argmax(logits, axis=1)]
    targets = predictions if s.target is None else [int(s.target)] * len(batch)
    all_maps = _method_maps(built, xs, targets, keys, [clip.source for _, clip in batch], st, control)
    for (i, clip), prediction, target, maps in zip(batch, predictions, targets, all_maps, strict=True):
        control.check()
        _score_video(net, i, clip, prediction, target, maps, s, stages, st)
    return all_maps


def _score_video(net: nn.Module, i: int, clip: EvalClip, prediction: int, target: int, maps: dict[str, np.ndarray],
                 s: EvalSettings, stages: Sequence[Stage] | None, st: _State) -> None:
    """Perturbation curves and per-video scores of video ``i`` from its maps."""
    x = clip.video
    t, _, h, w = x.shape
    masks, add = curve_masks((t, h, w), np.random.default_rng([s.seed, i]), s.region_size, s.region_step,
                             s.region_max)
    for name, pixel in maps.items():
        add(name, pixel)
    base = s.replace(x) if s.baseline != "road" else _road_imputer(x, s, i)
    curves = flipping_curves(net, x, base, target, masks, s.batch_size, stages)
    video = x.detach().double().cpu().numpy()
    chance: dict[str, float | None] = {}
    for name, pixel in maps.items():
        mine = {c.name: curves[f"{name}\t{c.name}" if c.per_method else c.name] for c in CURVES.values()}
        si = ScoreInput(pixel, mine, clip.truth, video)
        row: dict[str, Any] = {"video": clip.source, "method": name, "label": clip.label, "target": target,
                               "prediction": prediction}
        row.update({m.name: m.score(si) for m in METRICS.values() if m.family != "randomisation"})
        row.update({k: aopc(mine[c]) for c, k in order_scores().items()})
        st.rows.append(row)
        st.keys.append(i)
        if not chance:
            chance = {m.name: m.chance(si) for m in METRICS.values() if m.chance is not None}
        st.curves.setdefault(i, {})[name] = mine
    st.chance[i] = chance
    if i < max(s.mprt_videos, s.randomisation_videos):
        st.kept.append((i, target, maps))


def _road_imputer(x: Tensor, s: EvalSettings, i: int) -> Any:
    from vidxai.evaluation.road import RoadImputer

    return RoadImputer(x, noise=s.road_noise, seed=(s.seed, i))


class VideoScorer:
    """Scores the videos of one process, then runs the randomisation tests on the ones it kept.

    ``add(key, clip)`` for each of this process's videos (``key``: the video's position in the full list,
    which seeds its random parts, so a video scores the same whichever process takes it), then ``finish()``
    for the :class:`Shard`. :func:`evaluate` is one scorer over every clip; a sharded run has one per process.
    Videos are scored in groups of ``settings.video_batch`` (one attribution call per method and group; the
    last group when ``finish()`` is called), with the same scores as one at a time.

    With a ``control`` (:class:`~vidxai.evaluation.core.RunControl`) holding a journal, each scored group is
    written to it before the next one starts (its rows, chance levels, curves and failures; the maps of the
    videos the randomisation tests need as arrays), and the groups an earlier run of this process finished
    are read back from it: :meth:`needs` says which videos are still wanted (those not scored yet, and the
    randomisation tests' clips). The groups start where they started before, so the numbers are those of an
    uninterrupted run.
    """

    def __init__(self, net: nn.Module, methods: Sequence[str], settings: EvalSettings,
                 control: RunControl | None = None) -> None:
        settings.check()
        self.names = list(dict.fromkeys(methods))
        validate_method_names(self.names)
        self.net, self.s = net, settings
        self.control = control or RunControl()
        self.built, self.skipped, build_errors = build_methods(self.names, net, settings)
        self.build_errors = dict(build_errors)
        # per-frame CNN: each frame runs once; a network without the contract: whole clips through its forward
        self.stages = stages_or_none(net)
        self.st = _State(self.names, build_errors, dict.fromkeys(self.names, 0.0))
        self.clips: dict[int, EvalClip] = {}
        self.pending: list[tuple[int, EvalClip]] = []
        self.seconds = 0.0
        self.done: set[int] = set()
        self.shape: tuple[int, ...] | None = None  # one clip's (T, C, H, W), once one was scored
        self.kept_keys = max(settings.mprt_videos, settings.randomisation_videos)
        if self.control.journal is not None:
            self._restore(self.control.journal)

    @property
    def scored(self) -> int:
        """How many videos this process has scored (with those read back from the journal)."""
        return len(self.done)

    def needs(self, key: int) -> bool:
        """Whether :meth:`add` wants video ``key``: not scored yet, or a clip of the randomisation tests."""
        return key not in self.done or (key < self.kept_keys and key not in self.clips)

    def add(self, key: int, clip: EvalClip) -> None:
        """Score video ``key`` (with the videos before it once ``video_batch`` of them have come); a video the
        journal already holds is only kept for the randomisation tests."""
        key = int(key)
        if key in self.done:
            if key < self.kept_keys:
                self.clips[key] = clip
            return
        if self.pending and self.pending[0][1].video.shape != clip.video.shape:
            self.flush()  # clips of one batch must have one shape
        self.pending.append((key, clip))
        if len(self.pending) >= self.s.video_batch:
            self.flush()

    def flush(self) -> None:
        """Score the videos added and not scored yet (keeps the clips the randomisation tests need)."""
        if not self.pending:
            return
        batch = self.pending
        t0 = time.perf_counter()
        times, n_rows, failed = dict(self.st.times), len(self.st.rows), dict(self.st.failed)
        maps = _score_videos(self.net, batch, self.built, self.s, self.stages, self.st, self.control)
        self.pending = []
        for key, clip in batch:
            if key < self.kept_keys:
                self.clips[key] = clip
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.shape = self.shape or tuple(batch[0][1].video.shape)
        if self.control.journal is not None:
            self._record(batch, maps, times, n_rows, failed, seconds)
        self.done.update(key for key, _ in batch)
        self.control.progress("first pass", self.scored, 0)

    def _record(self, batch: list[tuple[int, EvalClip]], maps: list[dict[str, np.ndarray]], times: dict[str, float],
                n_rows: int, failed: dict[str, int], seconds: float) -> None:
        """Write the group just scored to the journal: maps first (atomic files), then its one record."""
        journal, st = self.control.journal, self.st
        kept = {k for k, _, _ in st.kept}
        videos = []
        for (key, clip), pixels in zip(batch, maps, strict=True):
            if key in kept or self.control.save_maps:
                arrays = {f"m_{name}": v for name, v in pixels.items()}
                arrays["__video__"] = clip.video.detach().cpu().numpy().astype(np.float16)
                journal.save_arrays(f"maps/{key}", arrays)
            videos.append({
                "key": key,
                "rows": [row for k, row in zip(st.keys[n_rows:], st.rows[n_rows:], strict=True) if k == key],
                "chance": st.chance.get(key, {}),
                "curves": {n: {c: v.tolist() for c, v in cs.items()} for n, cs in st.curves.get(key, {}).items()},
                "kept": next((t for k, t, _ in st.kept if k == key), None) if key in kept else None,
            })
        new_failures = {n: [k, st.errors[n]] for n, k in st.failed.items() if n not in failed}
        journal.append({"kind": "videos", "videos": videos, "failed": new_failures, "seconds": seconds,
                        "shape": list(batch[0][1].video.shape),
                        "times": {n: st.times[n] - times.get(n, 0.0) for n in st.times}})

    def _restore(self, journal: Any) -> None:
        """Read back the groups an earlier run of this process scored (in the order it scored them)."""
        st = self.st
        for record in journal.of_kind("videos"):
            for video in record["videos"]:
                key = int(video["key"])
                st.rows += video["rows"]
                st.keys += [key] * len(video["rows"])
                st.chance[key] = video["chance"]
                st.curves[key] = {n: {c: np.asarray(v, dtype=np.float64) for c, v in cs.items()}
                                  for n, cs in video["curves"].items()}
                if video.get("kept") is not None:
                    arrays = journal.load_arrays(f"maps/{key}")
                    st.kept.append((key, int(video["kept"]),
                                    {k[2:]: v for k, v in arrays.items() if k.startswith("m_")}))
                self.done.add(key)
            for name, (key, error) in record["failed"].items():
                st.errors[name], st.failed[name] = error, int(key)
            for name, sec in record["times"].items():
                st.times[name] = st.times.get(name, 0.0) + sec
            self.seconds += record["seconds"]
            self.shape = self.shape or tuple(record["shape"])
        if self.done:
            log.info("resumed: %d videos of this process were scored before; %d methods failed on them", len(self.done),
                     len(st.failed))

    def finish(self) -> Shard:
        """Run the randomisation tests on the kept videos; everything this process scored."""
        self.flush()
        st = self.st
        live = [n for n in self.names if n in self.built and n not in st.errors]
        rand = randomisation_pass(self.net, self.clips, st.kept, {n: self.built[n] for n in live}, self.s, st.rows,
                                  self.control)
        rand["methods"] = live if st.kept else []
        failed = {n: (k, st.errors[n]) for n, k in st.failed.items()}
        info = {n: {"family": m.family, "settings": m.settings} for n, m in self.built.items()}
        return Shard(list(zip(st.keys, st.rows)), st.chance, st.curves, failed, self.skipped, self.build_errors,
                     info, st.times, self.seconds, rand)


def evaluate(
    net: nn.Module, clips: Sequence[EvalClip], methods: Sequence[str], settings: EvalSettings
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``clips`` with ``net`` (eval mode, only read). See the module docstring.

    Returns a dict with ``settings``, ``metrics`` (per score: label, direction, family, chance, or the reason
    it was left out), ``chance``, ``methods`` (per name: mean scores, ``ci`` (95%), ``sem``, ``time_s``,
    ``mprt_spearman`` per cascade step; or ``skipped`` with ``reason`` / ``error``), ``comparisons``
    (per score and method: ``diff``, ``ci_low``, ``ci_high``, ``p``, ``tied_with_best``), ``vs_random``,
    ``verdict``, ``orders``, ``curves``, ``mprt``, ``timing`` and ``rows`` (one dict per video and method).
    The same as :func:`combine` of the shards of any split of ``clips`` over processes.
    """
    if not clips:
        raise ValueError("no clips to evaluate")
    scorer = VideoScorer(net, methods, settings)
    for i, clip in enumerate(clips):
        scorer.add(i, clip)
        if (i + 1) % settings.video_batch == 0 or i + 1 == len(clips):
            scorer.flush()
            log.info("evaluated %d/%d videos (%.0f s)", i + 1, len(clips), scorer.seconds)
    shape = tuple(clips[0].video.shape)
    return combine([scorer.finish()], scorer.names, settings, [c.source for c in clips], shape)
