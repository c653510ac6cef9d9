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

Nothing finished is lost: each process writes what it finished to its journal (:func:`process_journal`,
:mod:`vidxai.journal`) as it goes, and ``resume=<run folder>`` reads it back (:func:`check_resume` refuses a
resume with other settings, naming the key). SIGTERM stops the work at the next check (:func:`stop_check`:
between videos, between the steps of the randomisation tests), with what was finished saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from vidxai.callbacks.fail_fast import FailFast, Terminated, after_failure
from vidxai.errors import UserError
from vidxai.journal import Journal, journal_path, read_journal, run_settings, settings_difference

log = logging.getLogger(__name__)

__all__ = ["PaddedShard", "check_resume", "gather_to_rank_zero", "peak_rss_mb", "process_journal", "resume_settings",
           "run_in_process", "run_sharded", "stop_check"]


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
        log.info("rank %d of %d: %d video(s) done (peak memory %.0f MiB); sending the results to rank 0",
                 self.global_rank, self.trainer.world_size, self.done, peak_rss_mb())
        self.gathered = gather_to_rank_zero(payload)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    import resource
    import sys

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


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


# ---------------------------------------------------------------------------- stop and resume
def stop_check(trainer: Any) -> Callable[[], None]:
    """A function that raises :class:`~vidxai.callbacks.fail_fast.Terminated` once the run got SIGTERM (its
    :class:`FailFast` callback caught it; the other ranks got it forwarded): the work stops at the next check,
    not at the end of the phase. Without a trainer SIGTERM ends the process at once (the journal is safe)."""
    fail_fast = next((cb for cb in getattr(trainer, "callbacks", None) or [] if isinstance(cb, FailFast)), None)

    def check() -> None:
        if fail_fast is not None and fail_fast.signalled:
            raise Terminated("received SIGTERM")

    return check


def resume_settings(cfg: Any, mode: str) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues (:func:`vidxai.journal.run_settings` of
    the config as written, interpolations unresolved, with the mode that ``mode=auto`` chose)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
    return {**run_settings(plain), "mode": mode}


def check_resume(cfg: Any, mode: str) -> Path | None:
    """The run folder of ``resume=`` (``None`` without it), checked before anything is loaded: it exists, and
    the run it holds had the settings of this command (else one error line naming the first key that differs).
    A folder without a journal (stopped before its first video) is started from the beginning."""
    value = cfg.get("resume")
    if value in (None, ""):
        return None
    folder = Path(str(value)).expanduser()
    if not folder.is_dir():
        raise UserError(f"resume={value}: no such run folder; pass the folder of the interrupted run "
                        "(outputs/explain/<date>/<time>)")
    try:
        records = read_journal(journal_path(folder, 0))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    header = records[0] if records and records[0].get("kind") == "header" else None
    if header is None:
        log.warning("resume=%s: the run finished nothing before it stopped (no journal): starting from the first "
                    "video", folder)
        return folder
    diff = settings_difference(header["settings"], resume_settings(cfg, mode))
    if diff:
        raise UserError(f"resume={value}: the settings differ from the interrupted run's: {diff}; resume with the "
                        "same command plus resume=, or drop resume= to start a new run")
    return folder


def process_journal(run_dir: str | Path, header: Mapping[str, Any], resume: bool) -> Journal:
    """This process's journal in ``run_dir`` (rank ``r``: ``journal/rank<r>.jsonl``): a new one with ``header``
    (the run's settings), or with ``resume`` the one an interrupted run left, checked against ``header``."""
    rank, world = PaddedShard._rank_world()
    path = journal_path(run_dir, rank)
    found = read_journal(path)
    if found and not resume:
        raise UserError(f"{run_dir} holds the journal of an earlier run ({path}); continue it with "
                        f"resume={run_dir}, or write this run to another folder")
    journal = Journal(path, {**header, "rank": rank, "world": world})
    before = journal.header or {}
    if before.get("world", world) != world:
        raise UserError(f"resume={run_dir}: the interrupted run had {before['world']} processes, this one has {world}; "
                        "resume with the same trainer= settings")
    diff = settings_difference(before.get("settings", {}), header.get("settings", {}))
    if diff:
        raise UserError(f"resume={run_dir}: the settings differ from the interrupted run's: {diff}")
    return journal
