"""Helpers shared by the train and explain pipelines (Hydra-aware)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from vidxai.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

# exceptions a user can cause with a bad path, file or config value; printed as one line (exit code 2)
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, ValueError, KeyError)


def run_entry_point(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a pipeline; user errors end in one line on stderr and exit code 2 (VIDXAI_DEBUG=1: traceback)."""
    try:
        from vidxai.data import VideoDecodeError

        errors = USER_ERRORS + (VideoDecodeError,)
    except ImportError:  # pragma: no cover - data package always present in a full install
        errors = USER_ERRORS
    try:
        return fn(cfg)
    except (InstantiationException, *errors) as exc:
        # hydra.utils.instantiate wraps what a constructor raised: report the constructor's own message
        cause = exc.__cause__ if isinstance(exc, InstantiationException) else exc
        if not isinstance(cause, errors) or os.environ.get("VIDXAI_DEBUG"):
            raise
        msg = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    objects: list[Any] = []
    if not cfg:
        return objects
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.debug("instantiating %s <%s>", name, conf._target_)
            objects.append(hydra.utils.instantiate(conf))
    return objects


def to_plain(cfg: Any) -> Any:
    """A resolved plain-python copy of a config node (safe to store in checkpoints)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def sweep_group(cfg: DictConfig) -> None:
    """Fill ``logger.wandb.group`` when it is null: the task name for a single run, ``<task>-<sweep folder>`` for
    each job of a multirun (``-m``, optuna, submitit), so every job is its own W&B run, grouped by sweep."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default="unset")
    if group is not None:  # set explicitly, or no W&B logger
        return
    name = str(cfg.get("task_name") or "run")
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get() if HydraConfig.initialized() else None
        if hc is not None and hc.mode == RunMode.MULTIRUN and hc.runtime.output_dir:
            # <sweep dir>/<job subdir>: the sweep folder's name is the same for all of the sweep's jobs
            name = f"{name}-{Path(str(hc.runtime.output_dir)).parent.name}"
    except (ImportError, ValueError):  # pragma: no cover - Hydra always present with a DictConfig
        pass
    with open_dict(cfg):
        cfg.logger.wandb.group = name


def finish_wandb() -> None:
    """Close the active W&B run, so every job of a multirun gets its own run."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()
