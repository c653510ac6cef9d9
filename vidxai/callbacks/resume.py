"""What a hard-killed run needs to resume exactly: atomic checkpoint files, step checkpoints, seeded batches.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder, flushes it to
  disk and renames it over the target (``os.replace``), so a kill during a save leaves the previous
  checkpoint intact, never a truncated one.
* :class:`ModelCheckpoint` is Lightning's, but ``last.ckpt`` is written at the end of every epoch (Lightning
  refreshes it only when the monitored metric improved) and, with ``every_n_train_steps``, also every N
  optimiser steps; the best-checkpoint tracking stays at the end of each validation, and ties on the monitored
  metric (a saturated validation accuracy) go to the better ``tie_break`` metric (e.g. the validation loss).
* :class:`SeedEveryBatch` reseeds Python's, NumPy's and torch's global RNGs from ``(seed, epoch, batch)``
  before each training batch, so the randomness of a step (dropout, ...) does not depend on what ran before
  it in this process; together with :class:`vidxai.data.dataset.EpochSampler` a resumed run repeats an
  uninterrupted one bit for bit.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks import ModelCheckpoint as _LightningModelCheckpoint

from vidxai.checkpoint import TMP_MARK, atomic_save
from vidxai.errors import ConfigError

__all__ = ["TMP_MARK", "AtomicCheckpointIO", "ModelCheckpoint", "SeedEveryBatch", "atomic_save", "batch_seed"]

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Torch checkpoint IO whose local writes are atomic: temp file in the same folder, fsync, ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own (fsspec transaction) write
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, path)


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (best by ``monitor`` at validation end, ``last.ckpt``), plus
    ``every_n_train_steps``: also refresh ``last.ckpt`` every N optimiser steps (``None``/0: off).

    Lightning's own ``every_n_train_steps`` turns the epoch-end saves off and ranks step checkpoints by a
    stale ``monitor``; here it only adds step-wise ``last.ckpt`` files to resume from after a kill.

    ``tie_break`` (e.g. ``val/loss``, better when lower; ``tie_break_mode="max"`` for higher) ranks checkpoints
    whose ``monitor`` values are equal: Lightning keeps the earliest of them, so on a small validation set that
    saturates (accuracy 1.0 from some epoch on) it tests the first, weakest epoch to get there.
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, tie_break: str | None = None,
                 tie_break_mode: str = "min", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        self.last_every_n_train_steps = int(every_n_train_steps or 0)
        if self.last_every_n_train_steps < 0:
            raise ConfigError("callbacks.model_checkpoint.every_n_train_steps must be >= 0 or null, got "
                              f"{every_n_train_steps}")
        if tie_break_mode not in ("min", "max"):
            raise ConfigError("callbacks.model_checkpoint.tie_break_mode must be 'min' or 'max', got "
                              f"{tie_break_mode!r}")
        self.tie_break = tie_break or None
        self.tie_break_mode = tie_break_mode
        self.tie_values: dict[str, float] = {}  # tie_break value of each checkpoint in best_k_models

    # ------------------------------------------------------------------ ties on the monitored metric
    def _rank(self, path: str) -> tuple[float, float]:
        """Sort key, larger = better: the monitored value, then the tie-break value."""
        score = float(self.best_k_models[path])
        tie = self.tie_values.get(path, float("nan"))
        tie = -math.inf if math.isnan(tie) else (-tie if self.tie_break_mode == "min" else tie)
        return (score if self.mode == "max" else -score), tie

    def _tie_value(self, metrics: dict[str, Any]) -> float:
        value = metrics.get(self.tie_break) if self.tie_break else None
        return float(value) if value is not None else float("nan")

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        """Lightning's rule (strictly better than the k-th best), plus: equal and better on ``tie_break``."""
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if current is None or self.tie_break is None or not full:
            return super().check_monitor_top_k(trainer, current)
        kth = self.best_k_models[self.kth_best_model_path]
        if float(current) != float(kth):
            return super().check_monitor_top_k(trainer, current)
        tie, kth_tie = self._tie_value(trainer.callback_metrics), self.tie_values.get(self.kth_best_model_path)
        better = not math.isnan(tie) and (kth_tie is None or math.isnan(kth_tie) or
                                          (tie < kth_tie if self.tie_break_mode == "min" else tie > kth_tie))
        return trainer.strategy.reduce_boolean_decision(better)

    def _update_best_and_save(self, current: torch.Tensor, trainer: pl.Trainer,
                              monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.tie_break is None:
            super()._update_best_and_save(current, trainer, monitor_candidates)
            return
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k:  # Lightning drops the k-th
            self.kth_best_model_path = min(self.best_k_models, key=self._rank)
        tie = self._tie_value(monitor_candidates)
        super()._update_best_and_save(current, trainer, monitor_candidates)
        self.tie_values = {p: self.tie_values.get(p, tie) for p in self.best_k_models}
        self.best_model_path = max(self.best_k_models, key=self._rank)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k:
            self.kth_best_model_path = min(self.best_k_models, key=self._rank)
            self.kth_value = self.best_k_models[self.kth_best_model_path]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tie_break": self.tie_break, "tie_values": dict(self.tie_values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("tie_break") == self.tie_break:
            self.tie_values = dict(state_dict.get("tie_values") or {})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        """Lightning (>= 2.5) writes ``last.ckpt`` only when a top-k checkpoint was written too, so after the
        best epoch it goes stale; here it is written at the end of every epoch (a kill loses one epoch at most)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if not n or not self.save_last or trainer.global_step == 0 or trainer.global_step % n:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def batch_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """A 32-bit seed that is a pure function of ``(seed, epoch, batch_idx)``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(batch_idx)]).generate_state(1)[0])


class SeedEveryBatch(Callback):
    """Reseed ``random``, NumPy and torch (CPU and CUDA) from ``(seed, epoch, batch_idx)`` before each
    training batch: a step's randomness no longer depends on the process's history (a resumed run, a
    validation or an explanation callback that drew random numbers)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        s = batch_seed(self.seed, trainer.current_epoch, batch_idx)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # also seeds every CUDA device
