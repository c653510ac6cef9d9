"""The LRP engine: rules, recurrent propagation, the Captum-style attribution class, explanation metrics."""

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
    make_composite,
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
    "make_composite",
]
