"""The modes of ``explain.py``, one module each, chosen by ``mode=`` (or inferred from older command lines).

Every mode is a function ``run(ctx: ExplainContext) -> ModeResult``: it reads the mode's own keys from
``ctx.options``, writes its files into ``ctx.out_dir`` and returns what it wrote with its terminal summary.
"""

from __future__ import annotations

from collections.abc import Callable

from vidxai.pipelines.command_line import MODE_NAMES, choose_mode
from vidxai.pipelines.modes import compare, evaluate, profile, single
from vidxai.pipelines.modes.context import ExplainContext, ModeResult

__all__ = ["MODES", "ExplainContext", "ModeResult", "choose_mode"]

#: mode name -> its ``run(ctx)``; ``mode=auto`` picks one with :func:`choose_mode`.
MODES: dict[str, Callable[[ExplainContext], ModeResult]] = {
    "single": single.run,
    "compare": compare.run,
    "profile": profile.run,
    "evaluate": evaluate.run,
}

assert tuple(MODES) == MODE_NAMES, "the mode names checked on the command line (command_line.MODE_NAMES)"
