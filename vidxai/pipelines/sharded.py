"""Per-video work split over the processes of a Lightning Trainer (``trainer=ddp_cpu``, ``trainer=ddp``, SLURM).

:func:`run_sharded` runs ``step(i)`` for every video position ``i`` of ``range(n)`` through the Trainer's
``predict`` loop: the Trainer's strategy starts the processes (Lightning's launcher re-executes the script, or
SLURM started them), and its distributed sampler gives each process a deterministic share of the positions
(rank ``r`` of ``W``: ``r, r + W, r + 2W, ...``). After its last video each process calls ``finish()`` and
sends what it returns to rank 0 (``torch.distributed.gather_object``); rank 0 gets the list of every
process's result, the others ``None``. Merging (by video position, repeated videos dropped) is the caller's.

A failure in one process ends all of them with one message (:class:`vidxai.callbacks.fail_fast.FailFast`):
a peer waiting in the gather fails at once instead of waiting for the collective timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from vidxai.callbacks.fail_fast import after_failure

log = logging.getLogger(__name__)

__all__ = ["gather_to_rank_zero", "run_sharded"]


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` elsewhere; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def _position(batch: list[int]) -> int:
    return int(batch[0])


class _ShardWork(pl.LightningModule):
    """Holds the network (the strategy puts it on this process's device) and runs the caller's functions."""

    def __init__(self, net: nn.Module, step: Callable[[int], None], finish: Callable[[], Any]) -> None:
        super().__init__()
        self.net = net
        self._step, self._finish = step, finish
        self.gathered: list[Any] | None = None
        self.done = 0

    def predict_step(self, batch: int, batch_idx: int) -> int:
        with torch.enable_grad():  # the explainers need gradients; Lightning's loop runs under no_grad
            self._step(int(batch))
        self.done += 1
        return int(batch)

    def on_predict_epoch_end(self) -> None:
        payload = self._finish()
        log.info("rank %d of %d: %d video(s) done; sending the results to rank 0", self.global_rank,
                 self.trainer.world_size, self.done)
        self.gathered = gather_to_rank_zero(payload)


def run_sharded(trainer: pl.Trainer, net: nn.Module, n: int, step: Callable[[int], None],
                finish: Callable[[], Any]) -> list[Any] | None:
    """Run ``step(i)`` for this process's share of ``range(n)``, then gather ``finish()`` on rank 0 (see above).

    ``trainer``: a Trainer made for this (``logger=False``, ``inference_mode=False``, :class:`FailFast` among its
    callbacks). ``net`` is put on the process's device by the strategy.
    """
    loader = DataLoader(list(range(int(n))), batch_size=1, shuffle=False, collate_fn=_position)
    work = _ShardWork(net, step, finish)
    try:
        trainer.predict(work, dataloaders=loader, return_predictions=False)
    except Exception as exc:
        after_failure(trainer, exc)  # the other ranks end too; a rank that only followed says whom
        raise
    return work.gathered if trainer.is_global_zero else None
