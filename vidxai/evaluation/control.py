"""How a caller steers a long evaluation: where finished work goes, when to stop, how far it is.

:class:`RunControl` is handed to :class:`~vidxai.evaluation.runner.VideoScorer` (and through it to the
randomisation pass). Everything in it is optional: without it an evaluation runs start to end in memory, as
:func:`vidxai.evaluation.evaluate` does.

* ``journal`` (:class:`vidxai.journal.Journal`): each finished group of videos and each finished randomisation
  step of one method is written there before the next one starts; what the journal already holds (an earlier,
  interrupted run) is read back instead of computed again, with the same numbers;
* ``check()``: called between units of work (each method's maps of a group, each video's perturbation curves,
  each randomisation step of each method); it raises to stop the run (SIGTERM), leaving what was finished in the
  journal;
* ``progress(phase, done, total)``: after each unit (``phase``: ``first pass``, ``randomisation step k/n``,
  ``sMPRT``);
* ``save_maps``: also keep every video's maps in the journal folder (``maps/<key>.npz``), not only those the
  randomisation tests need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RunControl"]


def _nothing(*_: Any) -> None:
    return None


@dataclass
class RunControl:
    """See the module docstring."""

    journal: Any = None
    check: Callable[[], None] = _nothing
    progress: Callable[[str, int, int], None] = _nothing
    save_maps: bool = False
