"""The explanation pipeline behind ``explain.py``: settings, checkpoint, context, then one mode.

Everything about the model (architecture, classes, frames, size, normalisation, data) comes from the
checkpoint, or from the ``pretrained=`` source (a Hugging Face folder or cached repo id, or ``torchvision:<builder>``
with ``weights=``; :mod:`vidxai.pretrained`): its own head, labels and preprocessing, clips from ``video=`` or
``videos=<folder or glob>``. The modes (:mod:`vidxai.pipelines.modes`, ``mode=``; inferred from older command lines):

* ``single``: one video of the checkpoint's own split (default ``split=val index=0``; or ``class=NAME``) or any
  file (``video=PATH``),
* ``compare`` (``compare=[z,epsilon,...]``): the same, plus the rules side by side on the same frames,
* ``profile`` (``split=test`` alone, ``limit=N``): the temporal relevance profile of a whole split,
* ``evaluate`` (``evaluate=true split=test limit=N``): every LRP rule and the Captum baselines scored on the
  same videos (:mod:`vidxai.pipelines.evaluate`).

``profile`` and ``evaluate`` share their videos over the processes of the ``trainer`` group (``trainer=ddp_cpu``,
``trainer=ddp``, SLURM; :mod:`vidxai.pipelines.sharded`): rank 0 gathers them and writes every file.
``single`` and ``compare`` run in one process (rank 0 of a cluster job).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from vidxai.callbacks.fail_fast import FailFast
from vidxai.checkpoint import LoadedCheckpoint, load_checkpoint
from vidxai.data.transforms import VideoTransform
from vidxai.errors import UserError
from vidxai.pipelines._common import check_launch, finish_wandb, instantiate_group, lrp_config, sweep_group
from vidxai.pipelines.command_line import model_source
from vidxai.pipelines.modes import MODES, ExplainContext, ModeResult, choose_mode
from vidxai.pipelines.modes.compare import compare_rules
from vidxai.pipelines.modes.context import check_pretrained_options, class_index, load_pretrained_model
from vidxai.pipelines.modes.evaluate import check as check_evaluation
from vidxai.pipelines.sharded import check_resume
from vidxai.pipelines.train import preflight
from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

__all__ = ["explain", "explain_entry"]


#: the modes whose videos the trainer's processes share (``trainer=ddp_cpu`` ...); the others run in one process
SHARDED_MODES = ("profile", "evaluate")


def explain(cfg: DictConfig) -> dict[str, Any]:
    """Run the explanation described by ``cfg``; print and return its summary (rank 0; ``{}`` elsewhere)."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    mode, lrp = _check_settings(cfg)
    trainer = _trainer(cfg) if mode in SHARDED_MODES else None
    if trainer is None:
        if _processes(cfg.get("trainer")) > 1:
            log.info("mode=%s explains one video in one process; the trainer's processes share the videos of "
                     "mode=profile and mode=evaluate only", mode)
        if rank_zero_only.rank != 0:  # a process a cluster started too (srun): one of them is enough
            return {}
    device = trainer.strategy.root_device if trainer is not None else _device(str(cfg.get("device", "auto")))
    main = trainer is None or trainer.is_global_zero
    ck = _load(cfg, device, announce=main)
    ctx = _context(cfg, ck, device, lrp, trainer)
    try:
        result: ModeResult = MODES[mode](ctx)
    finally:
        finish_wandb()
    if ctx.is_main:
        print(result.summary(ctx.out_dir), flush=True)  # last: after W&B's own closing lines
    return result.data


def _trainer(cfg: DictConfig) -> Any:
    """The Trainer of the ``trainer`` group, made to share a split-wide mode's videos over its processes: no
    logger, checkpoints or progress bar, gradients allowed, :class:`FailFast` (one failing rank ends all)."""
    import hydra


    node = cfg.get("trainer")
    if node is None:
        raise UserError("the config has no trainer group; add `- trainer: default` to its defaults (conf/trainer/)")
    preflight(cfg)
    extra = _device_choice(str(node.get("accelerator", "auto")), str(cfg.get("device", "auto")))
    trainer = hydra.utils.instantiate(node, callbacks=[FailFast()], logger=False, enable_checkpointing=False,
                                      enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
                                      use_distributed_sampler=False, **extra)  # the shards: sharded.PaddedShard
    check_launch(trainer)
    return trainer


def _device_choice(accelerator: str, device: str) -> dict[str, Any]:
    """``device=cpu|cuda|cuda:N`` chooses the accelerator (and GPU) of a trainer with ``accelerator: auto``."""
    if accelerator != "auto" or device == "auto":
        return {}
    _device(device)  # one clear error for a GPU that is not there
    if device == "cpu":
        return {"accelerator": "cpu"}
    index = device.partition(":")[2]
    return {"accelerator": "gpu", "devices": [int(index)] if index.isdigit() else 1}


def _processes(node: Any) -> int:
    """How many processes a trainer config asks for (1 when it cannot say: ``devices: auto``)."""
    if node is None:
        return 1
    devices = node.get("devices", 1)
    per_node = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else \
        int(devices) if str(devices).isdigit() else 1
    return per_node * int(node.get("num_nodes", 1) or 1)


def _check_settings(cfg: DictConfig) -> tuple[str, LRPConfig]:
    """The mode and the LRP settings, every value checked before the checkpoint is loaded."""
    pretrained = model_source(cfg) == "pretrained"
    mode = choose_mode(cfg)
    if pretrained:
        check_pretrained_options(cfg, mode)
    lrp = lrp_config(cfg)
    if mode == "compare":
        compare_rules(cfg)
    if mode == "evaluate":
        check_evaluation(cfg)
    if cfg.get("resume") not in (None, ""):
        if mode not in SHARDED_MODES:
            raise UserError(f"resume= continues an interrupted mode=profile or mode=evaluate run; mode={mode} "
                            "explains one video: drop resume=")

        check_resume(cfg, mode)
    return mode, lrp


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def _load(cfg: DictConfig, device: torch.device, announce: bool = True) -> LoadedCheckpoint:
    """The checkpoint (or the ``pretrained=`` model), announced with what it is (architecture, classes, accuracy;
    for a pretrained model: what was taken from where)."""
    if cfg.get("pretrained") not in (None, ""):
        ck = load_pretrained_model(cfg, device)
        if announce:
            print(ck.describe(), flush=True)
        return ck
    ck = load_checkpoint(cfg.ckpt, map_location=device)
    if not ck.preprocess or "num_frames" not in ck.preprocess:
        raise UserError(
            f"checkpoint {ck.path} carries no preprocessing (num_frames, size, mean, std); retrain with train.py"
        )
    if not announce:  # another rank says it
        return ck
    print(ck.describe(), flush=True)
    if cfg.get("video") is not None:
        print(f"  it knows {len(ck.class_names)} classes: {', '.join(ck.class_names)}", flush=True)
    return ck


def _context(cfg: DictConfig, ck: LoadedCheckpoint, device: torch.device, lrp: LRPConfig, trainer: Any = None
             ) -> ExplainContext:
    """The mode's context: transform, target, output folder and W&B run (rank 0 only) of this checkpoint."""
    target = class_index(cfg.get("target"), ck.class_names)
    out_dir = Path(cfg.get("resume") or cfg.paths.output_dir)  # a resumed run goes on in its own folder
    out_dir.mkdir(parents=True, exist_ok=True)
    run = None
    if trainer is None or trainer.is_global_zero:
        sweep_group(cfg)
        run = _wandb_run(instantiate_group(cfg.get("logger")))
    transform = getattr(ck, "transform", None) or VideoTransform.from_preprocess(ck.preprocess)
    return ExplainContext(cfg, ck, transform, device, target, out_dir, run, lrp, trainer)


def _wandb_run(loggers: list[Any]) -> Any:
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            return lg.experiment
    return None


def explain_entry(cfg: DictConfig) -> dict[str, Any]:
    """Log the composed config, then explain."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    return explain(cfg)
