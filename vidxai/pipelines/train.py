"""The training pipeline behind ``train.py``: data module, model, callbacks, loggers, fit and test."""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vidxai.pipelines._common import finish_wandb, instantiate_group, sweep_group, to_plain

log = logging.getLogger(__name__)

# With OnExceptionCheckpoint among the callbacks, Lightning turns fit(ckpt_path=None) into "last" and warns
# twice when the (fresh) run folder has none yet; resuming is explicit here (ckpt_path=...), so say nothing.
warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=None\)` was called without a model.*")
warnings.filterwarnings("ignore", message=r".*fit\(ckpt_path=\"last\"\) is set, but there is no last checkpoint.*")


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """Instantiate the data module, generate/scan its videos and set up the fit splits."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: Any) -> pl.LightningModule:
    """Instantiate the LightningModule with everything a checkpoint needs to rebuild model and preprocessing."""
    return hydra.utils.instantiate(
        cfg.model,
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        preprocess=dict(datamodule.preprocess),
        # plain values only (no _target_): checkpoints must load with weights_only=True and name no code
        data={k: v for k, v in to_plain(cfg.data).items() if not k.startswith("_")},
        _convert_="all",
    )


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; returns ``cfg.optimized_metric`` for sweepers."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    callbacks = instantiate_group(cfg.get("callbacks"))
    sweep_group(cfg)  # W&B: one run per job, grouped by sweep
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for logger in trainer.loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})

    try:
        if cfg.get("train", True):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            _link_best(trainer)
        train_metrics = dict(trainer.callback_metrics)

        if trainer.interrupted:
            _report_interruption(trainer)
            return None
        if cfg.get("test", True):
            ckpt_path = _best_checkpoint(trainer)
            if ckpt_path is None:
                log.warning("no best checkpoint found; testing the current weights")
            else:
                log.info("testing the best checkpoint: %s", ckpt_path)
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = {**train_metrics, **trainer.callback_metrics}
    finally:
        finish_wandb()

    summary = {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    for key in sorted(summary):
        if key.startswith(("test/", "val/acc_best")):
            log.info("%s = %.4f", key, summary[key])

    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in summary:
        raise ValueError(f"optimized_metric={name!r} was not logged; choose one of {sorted(summary)}")
    value = summary[name]
    return value if math.isfinite(value) else float("nan")


def _report_interruption(trainer: pl.Trainer) -> None:
    ckpts = [cb for cb in trainer.callbacks if type(cb).__name__ == "OnExceptionCheckpoint"]
    saved = [Path(cb.ckpt_path) for cb in ckpts if Path(cb.ckpt_path).is_file()]
    where = saved[0] if saved else (_best_checkpoint(trainer) or "no checkpoint")
    log.warning("training was interrupted at epoch %d; resume with ckpt_path=%s", trainer.current_epoch, where)


def _link_best(trainer: pl.Trainer) -> None:
    """``checkpoints/best.ckpt`` -> the best checkpoint, so tools can say ``ckpt=.../best.ckpt``."""
    best = _best_checkpoint(trainer)
    if not best or not trainer.is_global_zero:
        return
    best_path = Path(best)
    link = best_path.parent / "best.ckpt"
    if link.resolve() == best_path.resolve():
        return
    link.unlink(missing_ok=True)
    try:
        link.symlink_to(best_path.name)
    except OSError:  # no symlinks (some network/Windows file systems): copy instead
        shutil.copyfile(best_path, link)
    log.info("best checkpoint: %s", link)


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    if isinstance(cb, ModelCheckpoint):
        return cb.best_model_path or cb.last_model_path or None
    return None
