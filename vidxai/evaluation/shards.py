"""Merge what several processes scored (:class:`~vidxai.evaluation.core.Shard`) into one evaluation result.

A sharded run (``explain.py ... evaluate=true trainer=ddp_cpu``) gives each process a share of the videos; each
scores its videos (perturbation, ground truth, randomisation) with a
:class:`~vidxai.evaluation.runner.VideoScorer`, and rank 0 merges the shards here. Every random part of a video
is seeded by ``(seed, video key)``, so a video scores the same in any process; :func:`combine` orders the
per-video results by video key, drops repeated videos (a distributed sampler pads the last shard by repeating
videos) and computes every statistic on the full set: the numbers equal those of one process.

A method that fails on a video is skipped from that video on, as in one process: its rows of later videos
(scored by other processes) and its randomisation scores are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vidxai.evaluation.core import EvalSettings, Shard
from vidxai.evaluation.perturbation import BASELINES
from vidxai.evaluation.registry import METRICS
from vidxai.evaluation.summary import aggregate

__all__ = ["combine"]

_RANDOMISATION = tuple(m.name for m in METRICS.values() if m.family == "randomisation")


@dataclass
class _Merged:
    """The per-video results of every shard, in video order (what :func:`aggregate` reads)."""

    rows: list[dict[str, Any]]
    chance_rows: list[dict[str, float | None]]
    curve_sums: dict[str, dict[str, np.ndarray]]
    times: dict[str, float]


def _first_failures(shards: Sequence[Shard]) -> dict[str, tuple[int, str]]:
    """Per method, the first video (lowest key) it failed on, with the error."""
    failed: dict[str, tuple[int, str]] = {}
    for shard in shards:
        for name, (key, error) in shard.failed.items():
            if name not in failed or key < failed[name][0]:
                failed[name] = (key, error)
    return failed


def _kept(name: str, key: int, failed: dict[str, tuple[int, str]]) -> bool:
    return name not in failed or key <= failed[name][0]


def _rows(shards: Sequence[Shard], names: list[str], failed: dict[str, tuple[int, str]]
          ) -> list[tuple[int, dict[str, Any]]]:
    """Every (video, method) row once, in video then method order; a failed method's later rows dropped."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for shard in shards:
        for key, row in shard.rows:
            if _kept(row["method"], key, failed):
                seen.setdefault((key, row["method"]), row)
    order = {n: j for j, n in enumerate(names)}
    rows = sorted(seen.items(), key=lambda item: (item[0][0], order.get(item[0][1], len(order))))
    for (_, name), row in rows:
        if name in failed:  # as in one process: a method that failed has no randomisation scores
            for k in [k for k in row if k.startswith("mprt/") or k in _RANDOMISATION]:
                del row[k]
    return [(key, row) for (key, _), row in rows]


def _curve_sums(shards: Sequence[Shard], keys: list[int], failed: dict[str, tuple[int, str]]
                ) -> dict[str, dict[str, np.ndarray]]:
    curves: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for shard in shards:
        for key, per_method in shard.curves.items():
            curves.setdefault(key, per_method)
    sums: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:  # summed in video order, as one process does
        for name, mine in curves.get(key, {}).items():
            if _kept(name, key, failed):
                acc = sums.setdefault(name, {})
                for c, v in mine.items():
                    acc[c] = acc.get(c, 0.0) + v
    return sums


def _rand(shards: Sequence[Shard], rows: list[tuple[int, dict[str, Any]]], keys: list[int], s: EvalSettings,
          failed: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The randomisation phase of all shards: steps, per-step mean Spearman (first ``mprt_videos`` videos)."""
    steps = next((sh.rand["steps"] for sh in shards if sh.rand["steps"]), [])
    methods = [n for n in dict.fromkeys(n for sh in shards for n in sh.rand.get("methods", [])) if n not in failed]
    per_step = {}
    for name in methods:
        mine = {key: row for key, row in rows if row["method"] == name}
        curve = []
        for step in steps:
            v = np.array([np.nan if mine.get(k, {}).get(f"mprt/{step}") is None else mine[k][f"mprt/{step}"]
                          for k in keys if k < s.mprt_videos], dtype=np.float64)
            curve.append(float(np.nanmean(v)) if np.isfinite(v).any() else None)
        per_step[name] = curve
    errors: dict[str, str] = {}
    method_s: dict[str, float] = {}
    for sh in shards:
        for name, err in sh.rand["errors"].items():
            errors.setdefault(name, err)
        for name, sec in sh.rand.get("method_s", {}).items():
            method_s[name] = method_s.get(name, 0.0) + sec
    return {"steps": steps, "per_step": per_step, "errors": errors, "method_s": method_s,
            "videos": sum(k < max(s.mprt_videos, s.randomisation_videos) for k in keys),
            "time_s": sum(sh.rand["time_s"] for sh in shards), "smprt_s": sum(sh.rand["smprt_s"] for sh in shards)}


def combine(shards: Sequence[Shard], names: list[str], settings: EvalSettings, videos: Sequence[str],
            shape: tuple[int, ...]) -> dict[str, Any]:
    """The result of :func:`~vidxai.evaluation.runner.evaluate` from the shards of all processes.

    ``videos``: the source of every video in key order; ``shape``: one clip's ``(T, C, H, W)``. Times
    (``time_s``, ``timing``, ``perturbation_s``) are summed over the processes.
    """
    s = settings
    failed = _first_failures(shards)
    skipped = {k: v for sh in shards for k, v in sh.skipped.items()}
    errors = {k: v for sh in shards for k, v in sh.build_errors.items()}
    errors.update({name: error for name, (_, error) in failed.items()})
    keyed = _rows(shards, names, failed)
    chance: dict[int, dict[str, float | None]] = {}
    for shard in shards:
        for key, c in shard.chance.items():
            chance.setdefault(key, c)
    keys = sorted(chance)
    times = {n: sum(sh.times.get(n, 0.0) for sh in shards) for n in names}
    merged = _Merged([row for _, row in keyed], [chance[k] for k in keys], _curve_sums(shards, keys, failed), times)
    rand = _rand(shards, keyed, keys, s, failed)
    for name, err in rand["errors"].items():
        errors.setdefault(name, f"randomisation test: {err}")
    info = {n: i for sh in reversed(shards) for n, i in sh.info.items()}
    result = aggregate(merged, names, info, skipped, errors, rand, s, list(videos), shape)
    perturbation_s = sum(sh.perturbation_s for sh in shards)
    result["settings"].update({**asdict(s), "perturbation_s": perturbation_s, "mprt_s": rand["time_s"],
                               "baseline_meaning": BASELINES[s.baseline], "processes": len(shards)})
    result["timing"]["tests"]["perturbation_and_ground_truth"] = perturbation_s
    return result
