"""The training pipeline behind ``train.py``: data module, model, callbacks, loggers, fit and test."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vidxai.callbacks.fail_fast import FailFast, after_failure
from vidxai.callbacks.resume import TMP_MARK, AtomicCheckpointIO, SeedEveryBatch
from vidxai.errors import ConfigError, MissingPathError, UserError
from vidxai.models import check_network
from vidxai.pipelines._common import check_launch, finish_wandb, instantiate_group, sweep_group, to_plain

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
    started = time.perf_counter()
    preflight(cfg)  # config mistakes fail here, before any video is decoded or model built
    ckpt_path = resolve_resume(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    # first, so that after a failure it runs before the other callbacks' on_exception (no barrier, no hang)
    callbacks = [FailFast(), *instantiate_group(cfg.get("callbacks"))]
    if cfg.get("seed") is not None:
        callbacks.append(SeedEveryBatch(int(cfg.seed)))
    _wandb_resume_id(cfg)
    sweep_group(cfg)  # W&B: one run per job, grouped by sweep
    loggers = instantiate_group(cfg.get("logger"))
    plugins = list(cfg.trainer.get("plugins") or [])
    if not any(isinstance(p, AtomicCheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  plugins=plugins)
    check_launch(trainer)

    for logger in trainer.loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})

    try:
        metrics = _fit_and_test(cfg, trainer, model, datamodule, ckpt_path)
    except Exception as exc:
        after_failure(trainer, exc)  # the other ranks end too; a rank that only followed says whom
        raise
    finally:
        finish_wandb()
    if metrics is None:
        return None

    summary = {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    for key in sorted(summary):
        if key.startswith(("test/", "val/acc_best")):
            log.info("%s = %.4f", key, summary[key])
    if trainer.is_global_zero:  # the run's own measurement, the last line: what the README's times come from
        acc = summary.get("test/acc")
        print(f"trained in {wall_time(time.perf_counter() - started)} ({trainer.current_epoch} epochs); test accuracy "
              + (f"{acc:.2f}" if acc is not None else "not measured (test=false)"), flush=True)

    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in summary:
        raise ConfigError(f"optimized_metric={name!r} was not logged; choose one of {sorted(summary)}")
    value = summary[name]
    return value if math.isfinite(value) else float("nan")


def wall_time(seconds: float) -> str:
    """``6 min 4 s`` (``42 s`` under a minute, ``1 h 2 min`` from an hour)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _fit_and_test(cfg: DictConfig, trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any,
                  ckpt_path: str | None) -> dict[str, Any] | None:
    """Fit (or resume), then test the best checkpoint; the logged metrics, or ``None`` when interrupted."""
    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
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
    return {**train_metrics, **trainer.callback_metrics}


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


# ----------------------------------------------------------------------------- checks before expensive work
def preflight(cfg: DictConfig) -> None:
    """Check what can be checked without data or model: the accelerator, pretrained weight files and whether the
    network takes the clips the data config makes."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} (e.g. trainer=gpu or trainer=ddp) but no CUDA GPU is "
                          "visible here: use trainer=cpu (or trainer=default, which picks what is there)")
    devices = cfg.trainer.get("devices", 1)
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible: "
                          "lower trainer.devices or use devices=auto")
    net = cfg.model.get("net") if cfg.get("model") is not None else None
    if net is not None:
        check_network(**to_plain(net), data=to_plain(cfg.get("data")))


# ----------------------------------------------------------------------------- resuming
def resolve_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path=last``: the newest checkpoint of this run's folder, and continue writing there.

    With ``hydra.run.dir`` given on the command line the run's folder is that folder. Otherwise every run
    gets a new time-stamped folder, so ``last`` means the newest checkpoint among the sibling run folders of
    the same task (``outputs/<task>/*/checkpoints/``), and this run continues writing into that folder (its
    best-checkpoint tracking, CSV and W&B run go on there). Any other ``ckpt_path`` is used as given.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None or str(ckpt_path) != "last":
        if ckpt_path is not None and not Path(str(ckpt_path)).expanduser().is_file():
            raise MissingPathError(f"ckpt_path={ckpt_path} is not a file: pass a .ckpt written by train.py, or "
                                   "ckpt_path=last for the newest checkpoint of the last run")
        return None if ckpt_path is None else str(ckpt_path)
    output_dir = Path(str(cfg.paths.output_dir))
    if _explicit_run_dir() or _is_multirun():
        folders = [output_dir]
    else:
        folders = sorted(p for p in output_dir.parent.iterdir() if p.is_dir())
    newest = newest_checkpoint(folders)
    if newest is None:
        where = output_dir if len(folders) == 1 else f"{output_dir.parent}/*"
        raise UserError(f"ckpt_path=last but there is no checkpoint in {where}/checkpoints: start without "
                        "ckpt_path, or pass hydra.run.dir=<the run folder to resume>")
    run_dir = newest.parent.parent
    if run_dir.resolve() != output_dir.resolve():
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        log.info("resuming %s: this run continues in %s", newest, run_dir)
    else:
        log.info("resuming %s", newest)
    _next_csv_version(cfg, run_dir)
    return str(newest)


def newest_checkpoint(run_dirs: list[Path]) -> Path | None:
    """The most recently written complete ``.ckpt`` under ``<run>/checkpoints/`` of ``run_dirs`` (links and
    temporary files of interrupted saves excluded)."""
    found = [p for d in run_dirs for p in (d / "checkpoints").glob("*.ckpt")
             if p.is_file() and not p.is_symlink() and TMP_MARK not in p.name]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), default=None)


def _explicit_run_dir() -> bool:
    """Whether ``hydra.run.dir`` / ``hydra.sweep.dir`` was given on the command line."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.hydra)
    except (ImportError, ValueError):
        return True
    return any(o.split("=", 1)[0].lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") for o in overrides)


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def _next_csv_version(cfg: DictConfig, run_dir: Path) -> None:
    """A resumed run logs CSV rows to ``csv/resume_<n>/`` (Lightning's CSV logger would delete the old file)."""
    csv = (cfg.get("logger") or {}).get("csv")
    if csv is None:
        return
    from omegaconf import open_dict

    base = run_dir / str(csv.get("name") or "csv")
    n = 1
    while (base / f"resume_{n}").exists():
        n += 1
    with open_dict(cfg):
        csv.version = f"resume_{n}"


WANDB_ID_FILE = "wandb_run_id.txt"


def _wandb_resume_id(cfg: DictConfig) -> None:
    """Give the W&B run a fixed id stored in the run folder, so a resumed run continues the same W&B run."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return
    from omegaconf import open_dict

    run_dir = Path(str(cfg.paths.output_dir))
    id_file = run_dir / WANDB_ID_FILE
    run_id = wandb_cfg.get("id") or (id_file.read_text().strip() if id_file.is_file() else None)
    if not run_id:  # from the run folder: every DDP process of the run agrees on it
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(f"{run_id}\n")
    with open_dict(cfg):
        wandb_cfg.id = run_id
        wandb_cfg.resume = "allow"
