"""``explain.py ... evaluate=true``: score every attribution method on the same videos of a split.

Called by the explain pipeline, which loads the checkpoint, its data module and the clips; this module
reads the evaluation settings from the config, attaches each clip's ground truth, runs
:func:`vidxai.evaluation.evaluate` and writes ``evaluation.json``, ``evaluation.csv``, ``evaluation.png``
and ``mprt.png`` into the run folder (and the table and figures into the W&B run).
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vidxai.callbacks.fail_fast import Terminated
from vidxai.data.ground_truth import clip_ground_truth, load_ground_truth
from vidxai.errors import UserError
from vidxai.evaluation import EvalClip, default_methods
from vidxai.evaluation.core import EvalSettings, RunControl
from vidxai.evaluation.methods import recommended_methods, validate_method_names
from vidxai.evaluation.runner import VideoScorer
from vidxai.evaluation.selection import named_videos, stratified
from vidxai.evaluation.shards import combine
from vidxai.evaluation.summary import markdown_table, summary_table
from vidxai.io import write_json
from vidxai.journal import atomic_write_text
from vidxai.pipelines._common import to_plain
from vidxai.pipelines.progress import RunProgress
from vidxai.pipelines.sharded import PaddedShard, peak_rss_mb, process_journal, resume_settings, run_in_process
from vidxai.viz.evaluation import evaluation_figure, mprt_figure
from vidxai.viz.media import save_figure
from vidxai.viz.report import evaluation_report, log_report
from vidxai.wandb_media import Image, Table, log_media
from vidxai.xai import RULES
from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

__all__ = ["evaluation_settings", "method_names", "run_evaluation"]


def method_names(cfg: DictConfig, net: Any = None) -> list[str]:
    """``methods=`` validated; default (``null``): the recommended few that apply to ``net``
    (:data:`vidxai.evaluation.methods.RECOMMENDED`), ``all``: every method that applies."""
    names = to_plain(cfg.get("methods"))
    if names is None or names == "all":
        rules = {key: str(value) for key in ("lstm_rule", "attention_rule")
                 if (value := OmegaConf.select(cfg, f"lrp.{key}"))}
        return (default_methods if names == "all" else recommended_methods)(net, **rules)
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names]
    if not names:
        raise UserError("methods=[] names no method; drop methods= to evaluate all of them")
    try:
        validate_method_names(names)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return names


def evaluation_settings(cfg: DictConfig, target: int | None = None, lrp: LRPConfig | None = None) -> EvalSettings:
    """The :class:`~vidxai.evaluation.EvalSettings` of ``cfg`` (the evaluation group, conf/evaluation/, with
    ``seed``), validated (one clear line on a bad value); a key missing from ``cfg`` takes the class's default."""
    lrp = lrp or LRPConfig()
    options = {key: to_plain(cfg.get(key)) for key in {k.partition(".")[0] for k in EvalSettings.CONFIG_KEYS}
               if cfg.get(key) is not None}
    try:
        settings = EvalSettings.from_options(
            options, seed=int(cfg.get("seed") or 0), target=target, chunk_frames=lrp.chunk_frames,
            recurrent={k: getattr(lrp, k) for k in ("lstm_eps", "bias_factor", "lstm_rule")})
        settings.check()
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return settings


#: ``shard(n, step, finish) -> [finish() of every process] on rank 0, None elsewhere``
ShardFn = Callable[[int, Callable[[int], None], Callable[[], Any]], "list[Any] | None"]


def run_evaluation(
    cfg: DictConfig,
    ck: Any,
    dataset: Any,
    load_clip: Callable[[int], Any],
    transform: Any,
    target: int | None,
    out_dir: Path,
    run: Any,
    lrp: LRPConfig | None = None,
    shard: ShardFn | None = None,
    stop: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Evaluate the methods of ``cfg`` on the chosen videos of ``dataset`` and write the results.

    Videos: ``videos=[...]`` (by file name or path) or ``limit=N`` stratified by class (round-robin over the
    classes, each class's order shuffled by ``seed``); both recorded in ``settings``.

    ``load_clip(i)`` returns the explain pipeline's clip ``i`` of ``dataset``; ``lrp`` holds the explainer
    settings of the LRP methods (``lstm_eps``, ``bias_factor``, ``lstm_rule``, ``chunk_frames``).
    ``shard(n, step, finish)`` splits the videos over processes (:meth:`ExplainContext.shard`): each process
    scores its share, rank 0 merges the shards (:func:`vidxai.evaluation.shards.combine`) and writes the files;
    the other ranks return ``None``. Default: every video in this process.

    Each process writes what it finished to its journal in ``out_dir/journal/`` as it goes (one record per
    group of ``video_batch`` videos, per randomisation step and method); with ``resume=`` (``out_dir`` is then
    the interrupted run's folder) what the journal holds is read back, not computed again. ``stop()`` is called
    between units of work and raises to stop (SIGTERM: :func:`vidxai.pipelines.sharded.stop_check`).
    """
    names = method_names(cfg, ck.net)
    settings = evaluation_settings(cfg, target, lrp)
    settings.rule_params = input_bound_params(ck.preprocess)
    split = str(cfg.get("split") or "test")
    picked, how = select_videos(cfg, dataset, split)
    log.info("evaluating %d methods on %d videos of split=%s (%s)", len(names), len(picked), split, how)
    start, cpu = time.perf_counter(), time.process_time()
    progress = RunProgress("videos")
    step, finish = _scorer(ck.net.eval(), names, settings, picked, dataset, load_clip, transform,
                           _control_of(cfg, out_dir, len(picked), stop, progress))
    previous = _sigterm_raises()
    try:  # a stop at any moment, the statistics and the writing included: the journal holds the work
        return _score_and_write(cfg, ck, dataset, split, how, picked, names, settings, out_dir, run, progress,
                                shard, step, finish, start, cpu)
    except (KeyboardInterrupt, SystemExit):
        progress.close()
        stopped(out_dir)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_raises() -> Any:
    """SIGTERM raises :class:`~vidxai.callbacks.fail_fast.Terminated` here (the previous handler, to restore;
    ``None`` off the main thread): outside the trainer's own handling (before and after the shards are scored:
    merging, statistics, writing) a SIGTERM then ends the run with the word on how to resume it, as inside."""


    if threading.current_thread() is not threading.main_thread():
        return None

    def raise_terminated(signum: int, _frame: Any) -> None:
        raise Terminated(f"received {signal.Signals(signum).name}")

    return signal.signal(signal.SIGTERM, raise_terminated)


def _score_and_write(cfg: DictConfig, ck: Any, dataset: Any, split: str, how: str, picked: list[int],
                     names: list[str], settings: Any, out_dir: Path, run: Any, progress: Any,
                     shard: ShardFn | None, step: Any, finish: Any, start: float, cpu: float
                     ) -> dict[str, Any] | None:
    """The shards scored (each process its share), merged on rank 0, the files written (rank 0)."""
    parts = (shard or run_in_process)(len(picked), step, finish)
    if parts is None:  # not rank 0: its shard went to rank 0
        progress.close()
        return None
    done = [p for p in parts if p is not None]
    sources = [str(dataset.entries[i].record.path) for i in picked]
    progress.update("statistics", 0, 1)
    result = combine([d["shard"] for d in done], names, settings, sources, done[0]["shape"])
    progress.update("statistics", 1, 1)
    progress.close()
    result["settings"].update({"split": split, "checkpoint": str(ck.path), "arch": ck.arch, "methods": names,
                               "selection": how, "limit": cfg.get("limit"),
                               "randomisation_videos": min(len(picked), settings.randomisation_videos),
                               "videos_named": to_plain(cfg.get("videos")),
                               "video_files": sources, "total_s": time.perf_counter() - start,
                               "total_cpu_s": time.process_time() - cpu, "peak_rss_mb": peak_rss_mb(),
                               "resumed": bool(cfg.get("resume"))})
    _write_results(result, ck, split, how, settings, out_dir, run)
    return result


def stopped(out_dir: Path) -> None:
    """The last word of an interrupted run: where its finished work is and how to continue it.

    The objects alive now are left out of the garbage collections to come (``gc.freeze``): the collection at
    the interpreter's exit would otherwise walk every one of them, which took 20 s and more on a busy CPU
    after a SIGTERM (the process must end soon after it, and nothing is left to save)."""
    gc.freeze()
    log.warning("stopped; everything finished so far is saved in %s. To continue, run the same command with "
                "resume=%s", Path(out_dir) / "journal", out_dir)


def _control_of(cfg: DictConfig, out_dir: Path, n: int, stop: Callable[[], None] | None, progress: Any
                ) -> Callable[[], Any]:
    """``make()`` -> the :class:`~vidxai.evaluation.core.RunControl` of this process (called in its first
    ``step``, once the process group is up: the journal is per rank, the progress counts this rank's share)."""
    def make() -> RunControl:
        share = len(PaddedShard(n))
        journal = process_journal(out_dir, {"settings": resume_settings(cfg, "evaluate"), "videos": n},
                                  resume=bool(cfg.get("resume")))

        def report(phase: str, done: int, total: int) -> None:
            progress.update(phase, done, total or share)

        return RunControl(journal=journal, check=stop or (lambda: None), progress=report,
                          save_maps=bool(cfg.get("save_maps", False)))

    return make


def _scorer(net: Any, names: list[str], settings: Any, picked: list[int], dataset: Any,
            load_clip: Callable[[int], Any], transform: Any, control: Callable[[], Any] | None = None
            ) -> tuple[Callable[[int], None], Callable[[], Any]]:
    """``step(k)`` scores the ``k``-th picked video in this process; ``finish()`` returns this process's shard
    and the clip shape (``None`` for a process that got no video). ``control()`` makes the process's
    :class:`~vidxai.evaluation.core.RunControl` (journal, stop check, progress) at its first step."""
    state: dict[str, Any] = {}

    def step(k: int) -> None:
        if "scorer" not in state:  # built here: the network sits on this process's device now
            ctl = control() if control is not None else None
            state["scorer"] = VideoScorer(net, names, settings, ctl)
            if ctl is not None:
                ctl.progress("first pass", state["scorer"].scored, 0)
        scorer = state["scorer"]
        scorer.control.check()
        if not scorer.needs(k):
            return
        clip = load_clip(picked[k])
        entry = dataset.entries[picked[k]]
        truth = clip_ground_truth(load_ground_truth(clip.source), clip.frame_indices,
                                  (entry.height, entry.width), dataset.size, transform)
        state["shape"] = tuple(clip.video.shape)
        scorer.add(k, EvalClip(clip.video, clip.source, clip.label, truth))

    def finish() -> dict[str, Any] | None:
        if "scorer" not in state:
            return None
        scorer = state["scorer"]
        shard = scorer.finish()
        shape = state.get("shape") or scorer.shape
        return {"shard": shard, "shape": shape} if shape is not None else None

    return step, finish


def _write_results(result: dict[str, Any], ck: Any, split: str, how: str, settings: Any, out_dir: Path,
                   run: Any) -> None:
    """``evaluation.json``, ``.csv``, ``.md``, the figures, ``report.html`` and the W&B table; the table on the
    console."""
    rows = result.pop("rows")
    n, names = result["settings"]["videos"], result["settings"]["methods"]
    write_json(out_dir / "evaluation.json", result)
    csv_path = _write_csv(out_dir / "evaluation.csv", rows, ck.class_names)
    table = markdown_table(result)
    atomic_write_text(out_dir / "evaluation.md", table + "\n")
    print(f"evaluation of {len(names)} methods on {n} videos of split={split} ({how}):\n{table}", flush=True)
    figures = _figures(result, out_dir, f"{ck.arch} · {Path(str(ck.path)).name} · split={split} · {n} "
                                        f"videos · baseline={settings.baseline}")

    report = evaluation_report(result, out_dir, figures, maps_dir=out_dir / "journal" / "maps")
    if run is not None:
        _log_wandb(run, result, figures, out_dir, csv_path)
        log_report(run, report, "evaluate/report")


def input_bound_params(preprocess: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``low``/``high`` of every registered rule that takes them: pixel values 0 and 1 after normalisation."""
    if not preprocess or preprocess.get("mean") is None or preprocess.get("std") is None:
        return {}
    mean, std = np.asarray(preprocess["mean"], dtype=float), np.asarray(preprocess["std"], dtype=float)
    bounds = {"low": ((0 - mean) / std).tolist(), "high": ((1 - mean) / std).tolist()}
    return {name: bounds for name, spec in RULES.items() if {"low", "high"} <= set(getattr(spec, "defaults", {}) or {})}


def select_videos(cfg: DictConfig, dataset: Any, split: str) -> tuple[list[int], str]:
    """Indices of the videos to evaluate and how they were chosen (``videos=[...]`` or stratified ``limit``)."""
    if len(dataset) == 0:
        raise UserError(f"split={split} of the checkpoint's data is empty; choose another split=")
    wanted = to_plain(cfg.get("videos"))
    paths = [str(e.record.path) for e in dataset.entries]
    if wanted:
        wanted = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
        try:
            return named_videos(paths, wanted), f"{len(wanted)} named videos"
        except ValueError as exc:
            raise UserError(str(exc)) from None
    limit = cfg.get("limit")
    try:
        picked = stratified([int(e.record.label) for e in dataset.entries], limit, int(cfg.get("seed", 0)))
    except (TypeError, ValueError) as exc:
        raise UserError(f"limit={limit!r}: {exc}") from None
    how = "every video" if limit is None or len(picked) == len(dataset) else \
        f"limit={len(picked)}, stratified by class (round-robin, seed={int(cfg.get('seed', 0))})"
    return picked, how


def _write_csv(path: Path, rows: list[dict[str, Any]], class_names: list[str]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    fh = io.StringIO(newline="")
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        out = dict(row)
        for key in ("label", "target", "prediction"):
            if isinstance(out.get(key), (int, np.integer)):
                out[key] = class_names[int(out[key])]
        writer.writerow({k: "" if v is None else v for k, v in out.items()})
    return atomic_write_text(path, fh.getvalue())


def _figures(result: dict[str, Any], out_dir: Path, title: str) -> dict[str, Path]:
    figures = {"evaluation": out_dir / "evaluation.png"}
    save_figure(evaluation_figure(result, title=title), figures["evaluation"])
    if result.get("mprt", {}).get("steps"):
        figures["mprt"] = out_dir / "mprt.png"
        save_figure(mprt_figure(result), figures["mprt"])
    return figures


def _log_wandb(run: Any, result: dict[str, Any], figures: dict[str, Path], out_dir: Path, csv_path: Path) -> None:
    columns, rows = summary_table(result)
    media: dict[str, Any] = {"evaluate/table": Table(columns, [list(r) for r in rows])}  # None = no score
    media.update({f"evaluate/{k}": Image(v) for k, v in figures.items()})
    log_media(run, media)
    for row in rows:
        for col, value in zip(columns[1:], row[1:]):
            if isinstance(value, float):
                run.summary[f"evaluate/{row[0]}/{col}"] = value
    for name in ("evaluation.json", csv_path.name):
        run.save(str(out_dir / name), base_path=str(out_dir), policy="now")
