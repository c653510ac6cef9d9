"""How far a split-wide explain mode is: a ``rich`` progress bar on a terminal, one log line per 10% otherwise.

One bar per phase (``first pass``: videos done / total; ``randomisation``: steps of the cascade times methods,
its description ``randomisation step k/n``; ``statistics``), each with the time elapsed and the time left. In a
log (not a terminal: a batch job, ``nohup``, a pipe) each phase logs a line at every tenth of its work:
``first pass: 30% (7/24 videos), 1 min 5 s so far, about 2 min 31 s left``. Only rank 0 of a sharded run shows
it (its own share of the videos; the other processes go at the same pace).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["RunProgress", "duration"]


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 7 min``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _rank() -> int:
    try:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    except Exception:  # noqa: BLE001 - no process group: this is the only process
        return 0


class RunProgress:
    """Progress of the phases of one run (see the module docstring).

    Args:
        unit: what the first pass counts (``videos``).
        interactive: draw a live bar (default: when stderr is a terminal); else log lines.
    """

    def __init__(self, unit: str = "videos", interactive: bool | None = None) -> None:
        self.unit = unit
        self.interactive = sys.stderr.isatty() if interactive is None else bool(interactive)
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._start: dict[str, tuple[float, int]] = {}
        self._tenth: dict[str, int] = {}
        self._on: bool | None = None

    @staticmethod
    def _family(phase: str) -> str:
        return "randomisation" if phase.startswith("randomisation") or phase == "sMPRT" else phase

    def _unit(self, family: str) -> str:
        return "steps" if family == "randomisation" else "" if family == "statistics" else self.unit

    def update(self, phase: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``phase`` are finished (the first call of a phase starts its clock)."""
        if self._on is None:
            self._on = _rank() == 0
        if not self._on or total <= 0:
            return
        family = self._family(phase)
        if family not in self._start:
            self._start[family] = (time.perf_counter(), done)
            self._tenth[family] = 10 * done // total
        if self.interactive:
            self._draw(family, phase, done, total)
        else:
            self._log(family, phase, done, total)

    def _draw(self, family: str, phase: str, done: int, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._bar is None:
            self._bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]:<6}"), TimeElapsedColumn(), TextColumn("so far,"),
                                 TimeRemainingColumn(), TextColumn("left"), console=Console(stderr=True),
                                 transient=False)
            self._bar.start()
        unit = self._unit(family)
        if family not in self._tasks:
            self._tasks[family] = self._bar.add_task(phase, total=total, completed=done, unit=unit)
        self._bar.update(self._tasks[family], description=phase, completed=done, total=total)

    def _log(self, family: str, phase: str, done: int, total: int) -> None:
        tenth = 10 * done // total
        if tenth <= self._tenth[family]:
            return
        self._tenth[family] = tenth
        t0, first = self._start[family]
        spent, new = time.perf_counter() - t0, done - first
        left = f", about {duration(spent / new * (total - done))} left" if 0 < new and done < total else ""
        unit = f" {self._unit(family)}".rstrip()
        log.info("%s: %d%% (%d/%d%s), %s so far%s", phase, 100 * done // total, done, total, unit,
                 duration(spent), left)

    def close(self) -> None:
        """Stop the live bar (its last state stays on the terminal)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
