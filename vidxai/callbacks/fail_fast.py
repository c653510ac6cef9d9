"""A multi-process run ends when one of its processes fails: no rank waits for a peer that will never come.

With several processes (``trainer=ddp_cpu``, ``trainer=ddp``), a rank that raises used to wait for the others
in a barrier (Lightning's ``OnExceptionCheckpoint`` -> ``Trainer.save_checkpoint``) while they waited for it in
the gradient all-reduce, until the 30-minute collective timeout. :class:`FailFast`, which the training
pipeline adds to every run, turns any failure into a prompt exit of every rank:

* the failing rank says which rank failed and with what (one ``ERROR`` line, also left in the run folder as
  ``.rank<r>_failed.txt`` for the others), disables barriers, stops Lightning's child-process observer (it
  would SIGKILL rank 0 before its checkpoint) and destroys the process group: the peers' pending collectives
  fail at once ("connection closed") instead of waiting for the timeout;
* a peer that fails that way says which rank failed first and with what, and ends with one ``error:`` line
  (:class:`PeerFailedError`) instead of a gloo traceback;
* the on-exception checkpoint is written from rank 0's own state, without waiting for the others (its
  weights are those of the last optimiser step every rank completed);
* SIGTERM (``timeout``, ``kill``, a scheduler) is forwarded to the other ranks and stops the run at the end of
  the current batch through Lightning's interrupt path (checkpoint, exit code 1); Lightning's own SIGTERM
  handler is replaced, because it runs a collective inside the signal handler;
* a watchdog ends any process that is still alive ``grace_s`` seconds after its failure or signal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

from vidxai.errors import UserError

log = logging.getLogger(__name__)

#: what gloo / the TCP store say when the process at the other end went away
PEER_GONE = ("connection closed", "connection reset", "broken pipe", "socket closed", "connection refused")


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised at a batch boundary so Lightning takes its graceful-interrupt path."""


class PeerFailedError(UserError):
    """This rank stopped because another rank of the run failed first (the message names it)."""


class FailFast(Callback):
    """End every rank of a run promptly when one fails or the run receives SIGTERM (see the module doc).

    Args:
        grace_s: seconds a failing or signalled process may take to write its checkpoint and exit before the
            watchdog ends it.
    """

    def __init__(self, grace_s: float = 45.0) -> None:
        self.grace_s = float(grace_s)
        self.origin: bool | None = None  # after a failure: whether this rank failed first
        self.message: str | None = None
        self._signal: int | None = None
        self._trainer: pl.Trainer | None = None

    # ------------------------------------------------------------------ SIGTERM
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        _note(trainer, trainer.global_rank).unlink(missing_ok=True)  # a stale note of an earlier run

    def on_sanity_check_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._install()

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._install()

    def on_test_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._install()

    def on_predict_start(self, trainer: pl.Trainer, *_: Any) -> None:  # explain.py's sharded modes
        self._install()

    def on_train_batch_start(self, *_: Any) -> None:
        self._stop_if_signalled()

    def on_validation_batch_start(self, *_: Any) -> None:
        self._stop_if_signalled()

    def on_test_batch_start(self, *_: Any) -> None:
        self._stop_if_signalled()

    def on_predict_batch_start(self, *_: Any) -> None:
        self._stop_if_signalled()

    def _install(self) -> None:
        """Replace Lightning's SIGTERM handler (registered after ``setup``; restored by it at teardown)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, _frame: Any) -> None:
        if self._signal is not None:  # a second SIGTERM: stop now, wherever this is
            raise Terminated("received SIGTERM twice")
        self._signal = signum
        rank = self._trainer.global_rank if self._trainer is not None else 0
        log.warning("rank %d: received SIGTERM; stopping at the end of this batch (on-exception checkpoint, "
                    "then exit)", rank)
        for proc in _child_ranks(self._trainer):
            proc.send_signal(signum)
        arm_watchdog(self.grace_s, f"rank {rank} did not stop within {self.grace_s:g} s of SIGTERM; killed")

    @property
    def signalled(self) -> bool:
        """Whether this process got SIGTERM (work that checks it between its own steps stops there)."""
        return self._signal is not None

    def _stop_if_signalled(self) -> None:
        if self._signal is not None:
            raise Terminated(f"received {signal.Signals(self._signal).name}")

    # ------------------------------------------------------------------ failures
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.world_size <= 1:
            return
        rank, world = trainer.global_rank, trainer.world_size
        first = _first_failure(trainer)
        if first is None and _is_peer_loss(exception):
            first = "another rank died without a message (killed?): see its output above"
        self.origin = first is None
        if self.origin:
            self.message = f"rank {rank} of {world} failed: {describe(exception)}"
            _write_note(trainer, self.message)
            log.error("%s; stopping all %d ranks", self.message, world)
        else:
            self.message = f"rank {rank} of {world} stopped because {first}"
            log.error(self.message)
        arm_watchdog(self.grace_s, f"rank {rank} did not exit within {self.grace_s:g} s of the failure; killed")
        trainer.strategy.barrier = _no_barrier  # the on-exception checkpoint must not wait for the others
        _stop_child_observer()
        abort_process_group()


def after_failure(trainer: pl.Trainer, exception: BaseException, wait_s: float = 20.0) -> None:
    """In the training pipeline, after ``fit``/``test`` raised: rank 0 waits ``wait_s`` for the ranks it
    launched to exit (then kills them), and a rank that only followed another's failure raises
    :class:`PeerFailedError` naming it (one line instead of a gloo traceback)."""
    children = _child_ranks(trainer)
    deadline = time.monotonic() + wait_s
    for proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - still running: end it
            proc.kill()
    fail_fast = next((cb for cb in trainer.callbacks if isinstance(cb, FailFast)), None)
    if fail_fast is not None and fail_fast.origin is False and isinstance(exception, Exception):
        raise PeerFailedError(fail_fast.message) from exception


def describe(exception: BaseException) -> str:
    """``Type: message`` on one line (the first 300 characters)."""
    text = " ".join(str(exception).split()) or "(no message)"
    if isinstance(exception, KeyboardInterrupt) and not isinstance(exception, Terminated):
        text = "interrupted (Ctrl-C)"
    return f"{type(exception).__name__}: {text[:300]}"


def arm_watchdog(seconds: float, message: str) -> None:
    """End this process ``seconds`` from now if it is still alive (once per process): a thread prints
    ``message`` and SIGKILLs it; ``SIGALRM`` 10 s later is the backstop when Python itself is stuck."""
    global _WATCHDOG_ARMED
    if _WATCHDOG_ARMED:
        return
    _WATCHDOG_ARMED = True

    def _run() -> None:
        time.sleep(seconds)
        print(f"error: {message}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=_run, name="vidxai-exit-watchdog", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(seconds) + 10)


_WATCHDOG_ARMED = False


def abort_process_group(timeout_s: float = 5.0) -> None:
    """Destroy the default process group (closing this rank's connections, so the peers' collectives fail
    at once); in a thread, so a destroy that blocks costs at most ``timeout_s``."""
    if not (dist.is_available() and dist.is_initialized()):
        return

    def _destroy() -> None:
        try:
            dist.destroy_process_group()
        except Exception as exc:  # noqa: BLE001 - the group is broken already; exiting closes it anyway
            log.debug("destroy_process_group: %s", exc)

    thread = threading.Thread(target=_destroy, name="vidxai-abort-process-group", daemon=True)
    thread.start()
    thread.join(timeout_s)


def _no_barrier(*_: Any, **__: Any) -> None:
    """A barrier after a failure: the other ranks may never come."""


def _stop_child_observer() -> None:
    """Lightning's child-process observer SIGKILLs rank 0 when a child exits non-zero; after a failure
    rank 0 ends its children itself (:func:`after_failure`), after writing its checkpoint."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer":
            thread._run = lambda: True  # noqa: SLF001 - its loop ends at the next poll, killing nothing
            thread._finished = True  # noqa: SLF001


def _child_ranks(trainer: pl.Trainer | None) -> list[Any]:
    """The rank processes Lightning's ``ddp`` launcher started from this one (rank 0 only)."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return list(getattr(launcher, "procs", None) or [])


def _note(trainer: pl.Trainer, rank: int) -> Path:
    return Path(trainer.default_root_dir) / f".rank{rank}_failed.txt"


def _write_note(trainer: pl.Trainer, message: str) -> None:
    try:
        _note(trainer, trainer.global_rank).write_text(message + "\n")
    except OSError as exc:  # a read-only or vanished run folder: the log line is still there
        log.debug("could not write the failure note: %s", exc)


def _first_failure(trainer: pl.Trainer) -> str | None:
    """The message of another rank that failed before this one (from its note in the run folder)."""
    notes = [_note(trainer, r) for r in range(trainer.world_size) if r != trainer.global_rank]
    found = [p for p in notes if p.is_file()]
    if not found:
        return None
    return min(found, key=lambda p: p.stat().st_mtime_ns).read_text().strip()


def _is_peer_loss(exception: BaseException) -> bool:
    """Whether ``exception`` (or what caused it) says a collective lost its peer."""
    seen: BaseException | None = exception
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, dist.DistError) or any(m in str(seen).lower() for m in PEER_GONE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


__all__ = ["FailFast", "PeerFailedError", "Terminated", "abort_process_group", "after_failure", "arm_watchdog",
           "describe"]
