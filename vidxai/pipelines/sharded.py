"""Per-video work split over the processes of a Lightning Trainer (``trainer=ddp_cpu``, ``trainer=ddp``, SLURM).

:func:`run_sharded` runs ``step(i)`` for every video position ``i`` of ``range(n)`` through the Trainer's
``predict`` loop: the Trainer's strategy starts the processes (Lightning's launcher re-executes the script, or
SLURM started them), and :class:`PaddedShard` gives each process a deterministic share of the positions
(rank ``r`` of ``W``: ``r, r + W, r + 2W, ...``, padded like a ``DistributedSampler``). After its last video
each process calls ``finish()`` and sends what it returns to rank 0 (``torch.distributed.gather_object``);
rank 0 gets the list of every process's result, the others ``None``. Merging (by video position, repeated
videos dropped) is the caller's.

A failure in one process ends all of them with one message (:class:`vidxai.callbacks.fail_fast.FailFast`):
a peer waiting in the gather fails at once instead of waiting for the collective timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from vidxai.callbacks.fail_fast import after_failure

log = logging.getLogger(__name__)

__all__ = ["PaddedShard", "gather_to_rank_zero", "run_in_process", "run_sharded"]


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


class PaddedShard(Sampler[int]):
    """This process's share of ``range(n)`` as :class:`~torch.utils.data.DistributedSampler` makes it without
    shuffling: rank ``r`` of ``W`` takes ``r, r + W, ...`` of the positions padded to a multiple of ``W`` by
    repeating the first ones, so every rank has ``ceil(n / W)`` (at least one: a rank without a batch would
    skip the loop and never reach the gather). Rank and world size are read when iterating (after the strategy
    set up the process group); the caller drops the repeated positions."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return -(-self.n // self._rank_world()[1])

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        padded = [i % self.n for i in range(len(self) * world)]
        return iter(padded[rank::world])


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


def run_in_process(n: int, step: Callable[[int], None], finish: Callable[[], Any]) -> list[Any]:
    """Without a Trainer: ``step(i)`` for every ``i`` of ``range(n)`` here, then ``[finish()]``."""
    for i in range(int(n)):
        step(i)
    return [finish()]


def run_sharded(trainer: pl.Trainer, net: nn.Module, n: int, step: Callable[[int], None],
                finish: Callable[[], Any]) -> list[Any] | None:
    """Run ``step(i)`` for this process's share of ``range(n)``, then gather ``finish()`` on rank 0 (see above).

    ``trainer``: a Trainer made for this (``logger=False``, ``inference_mode=False``, ``use_distributed_sampler=False``:
    the shards are :class:`PaddedShard`'s; :class:`FailFast` among its callbacks). ``net`` is put on the process's
    device by the strategy. With ``n`` not a multiple of the number of processes, some positions come twice.
    """
    loader = DataLoader(list(range(int(n))), batch_size=1, sampler=PaddedShard(n), collate_fn=_position)
    work = _ShardWork(net, step, finish)
    try:
        trainer.predict(work, dataloaders=loader, return_predictions=False)
    except Exception as exc:
        after_failure(trainer, exc)  # the other ranks end too; a rank that only followed says whom
        raise
    return work.gathered if trainer.is_global_zero else None
