"""``mode=evaluate`` (``evaluate=true split=test limit=N``): every LRP rule and the Captum baselines scored on the
same videos (:mod:`vidxai.pipelines.evaluate`). Builds no explainer of its own: the methods are built by the
evaluation from ``ctx.lrp``. The videos are split over the trainer's processes; rank 0 merges and writes."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from vidxai.errors import UserError
from vidxai.pipelines.evaluate import evaluation_settings, method_names, run_evaluation
from vidxai.pipelines.modes.context import ExplainContext, ModeResult
from vidxai.pipelines.sharded import stop_check

__all__ = ["check", "run"]


def check(options: DictConfig) -> None:
    """Refuse what evaluate mode cannot do and bad evaluation values, before the checkpoint is loaded."""
    if options.get("video") is not None:
        raise UserError("evaluate mode scores the videos of a split of the checkpoint's data; drop video= "
                        "and pass split=test limit=N")
    method_names(options)
    evaluation_settings(options)


def run(ctx: ExplainContext) -> ModeResult:
    """Score the methods on ``limit`` videos of ``split`` (default ``test``), split over the trainer's processes."""
    split = str(ctx.options.get("split") or "test")
    dataset = ctx.dataset(split)
    options = ctx.options
    if ctx.pretrained:  # videos= named the clips themselves (the data set), not a choice among a split's videos
        options = OmegaConf.merge(ctx.options, {"videos": None, "split": "videos"})
        split = f"videos={ctx.options.get('videos')}"
    result = run_evaluation(options, ctx.ck, dataset, lambda i: ctx.clip(dataset, i), ctx.transform,
                            ctx.target, ctx.out_dir, ctx.run, lrp=ctx.lrp, shard=ctx.shard,
                            stop=stop_check(ctx.trainer))
    if result is None:  # not rank 0: its videos went to rank 0
        return ModeResult("evaluate", {}, [])
    n = len(result.get("settings", {}).get("video_files", []))
    where = split if ctx.pretrained else f"split {split}"
    lines = [f"evaluated {len(result.get('methods', {}))} methods on {n} videos of {where} "
             "(evaluation.md: the table; evaluation.png, evaluation.csv, evaluation.json)"]
    return ModeResult("evaluate", result, lines)
