"""The modes of ``explain.py``, one module each, chosen by ``mode=`` (or inferred from older command lines).

Every mode is a function ``run(ctx: ExplainContext) -> ModeResult``: it reads the mode's own keys from
``ctx.options``, writes its files into ``ctx.out_dir`` and returns what it wrote with its terminal summary.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from vidxai.errors import UserError
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


def choose_mode(options: DictConfig) -> str:
    """``mode=`` when given, else inferred as older command lines meant it: ``evaluate=true`` -> evaluate,
    ``compare=[..]`` -> compare, ``split=`` without ``index``/``class``/``video`` (or ``pretrained=`` with ``videos=``
    and no ``video=``) -> profile, else single."""
    mode = str(options.get("mode") or "auto")
    if mode != "auto":
        if mode not in MODES:
            raise UserError(f"mode={mode}: choose one of auto, {', '.join(MODES)}")
        return mode
    if options.get("evaluate"):
        return "evaluate"
    if options.get("compare"):
        return "compare"
    picks_one = any(options.get(k) is not None for k in ("video", "index", "class"))
    if options.get("pretrained") not in (None, "") and options.get("videos") not in (None, "") and not picks_one:
        return "profile"  # a pretrained model over a folder of clips
    return "profile" if options.get("split") is not None and not picks_one else "single"
