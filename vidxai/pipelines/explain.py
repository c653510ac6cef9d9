"""The explanation pipeline behind ``explain.py``: settings, checkpoint, context, then one mode.

Everything about the model (architecture, classes, frames, size, normalisation, data) comes from the
checkpoint. The modes (:mod:`vidxai.pipelines.modes`, ``mode=``; inferred from older command lines):

* ``single``: one video of the checkpoint's own split (default ``split=val index=0``; or ``class=NAME``) or any
  file (``video=PATH``),
* ``compare`` (``compare=[z,epsilon,...]``): the same, plus the rules side by side on the same frames,
* ``profile`` (``split=test`` alone, ``limit=N``): the temporal relevance profile of a whole split,
* ``evaluate`` (``evaluate=true split=test limit=N``): every LRP rule and the Captum baselines scored on the
  same videos (:mod:`vidxai.pipelines.evaluate`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vidxai.checkpoint import LoadedCheckpoint, load_checkpoint
from vidxai.errors import UserError
from vidxai.pipelines._common import finish_wandb, instantiate_group, lrp_config, sweep_group
from vidxai.pipelines.modes import MODES, ExplainContext, ModeResult, choose_mode
from vidxai.pipelines.modes.compare import compare_rules
from vidxai.pipelines.modes.context import class_index
from vidxai.pipelines.modes.evaluate import check as check_evaluation
from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

__all__ = ["explain", "explain_entry"]


def explain(cfg: DictConfig) -> dict[str, Any]:
    """Run the explanation described by ``cfg``; print and return its summary."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    mode, lrp = _check_settings(cfg)
    device = _device(str(cfg.get("device", "auto")))
    ck = _load(cfg, device)
    ctx = _context(cfg, ck, device, lrp)
    try:
        result: ModeResult = MODES[mode](ctx)
    finally:
        finish_wandb()
    print(result.summary(ctx.out_dir), flush=True)  # last: after W&B's own closing lines
    return result.data


def _check_settings(cfg: DictConfig) -> tuple[str, LRPConfig]:
    """The mode and the LRP settings, every value checked before the checkpoint is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt") or cfg.get("ckpt") in (None, ""):
        raise UserError("explain.py needs a checkpoint: pass ckpt=outputs/train/<run>/checkpoints/best.ckpt "
                        "(written by train.py), or use `make explain`, which takes the newest one")
    mode = choose_mode(cfg)
    lrp = lrp_config(cfg)
    if mode == "compare":
        compare_rules(cfg)
    if mode == "evaluate":
        check_evaluation(cfg)
    return mode, lrp


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def _load(cfg: DictConfig, device: torch.device) -> LoadedCheckpoint:
    """The checkpoint, announced with what it is (architecture, classes, accuracy)."""
    ck = load_checkpoint(cfg.ckpt, map_location=device)
    if not ck.preprocess or "num_frames" not in ck.preprocess:
        raise UserError(
            f"checkpoint {ck.path} carries no preprocessing (num_frames, size, mean, std); retrain with train.py"
        )
    print(ck.describe(), flush=True)
    if cfg.get("video") is not None:
        print(f"  it knows {len(ck.class_names)} classes: {', '.join(ck.class_names)}", flush=True)
    return ck


def _context(cfg: DictConfig, ck: LoadedCheckpoint, device: torch.device, lrp: LRPConfig) -> ExplainContext:
    """The mode's context: transform, target, output folder and W&B run of this checkpoint."""
    from vidxai.data.transforms import VideoTransform

    target = class_index(cfg.get("target"), ck.class_names)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_group(cfg)
    run = _wandb_run(instantiate_group(cfg.get("logger")))
    return ExplainContext(cfg, ck, VideoTransform.from_preprocess(ck.preprocess), device, target, out_dir, run, lrp)


def _wandb_run(loggers: list[Any]) -> Any:
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            return lg.experiment
    return None


def explain_entry(cfg: DictConfig) -> dict[str, Any]:
    """Log the composed config, then explain."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    return explain(cfg)
