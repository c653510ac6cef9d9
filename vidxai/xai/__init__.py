"""The LRP engine: rules, recurrent propagation, the Captum-style attribution class."""

from vidxai.xai.explainer import Explanation, VideoLRP
from vidxai.xai.rules import (
    RULES,
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    RuleSpec,
    WinnerTakeAll,
    ZPlus,
    get_rule,
    make_composite,
    resolve_rule,
)

__all__ = [
    "RULES",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "Explanation",
    "Flat",
    "Gamma",
    "Norm",
    "Pass",
    "RuleSpec",
    "VideoLRP",
    "WinnerTakeAll",
    "ZPlus",
    "get_rule",
    "make_composite",
    "resolve_rule",
]
