"""Test-only callbacks for multi-process runs, added from the command line (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


class FailOnRank:
    """A callback that makes rank ``rank`` fail at training batch ``batch`` of ``epoch``: ``how="raise"`` raises
    (as a corrupt clip in the data would), ``how="kill"`` SIGKILLs the process (out of memory, pre-emption)."""

    def __new__(cls, rank: int = 0, epoch: int = 0, batch: int = 1, how: str = "raise"):
        from pytorch_lightning.callbacks import Callback

        class _Fail(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch_obj, batch_idx) -> None:
                if trainer.global_rank != rank or trainer.current_epoch != epoch or batch_idx != batch:
                    return
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"corrupt clip in batch {batch_idx} (test failure on rank {rank})")

        return _Fail()


class SlowBatches:
    """A callback that sleeps ``seconds`` after every training batch and, at the first one, writes the process
    id to ``<run folder>/rank<r>.pid`` (the test knows then that training runs, and which processes to watch)."""

    def __new__(cls, seconds: float = 1.0):
        from pytorch_lightning.callbacks import Callback

        class _Slow(Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
                pid_file = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pid"
                if not pid_file.exists():
                    pid_file.write_text(str(os.getpid()))
                time.sleep(seconds)

        return _Slow()
