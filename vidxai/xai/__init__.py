"""The LRP engine: rules and composites, the layer and stage-propagator registries, the explainer."""

from vidxai.xai import composites as _composites  # noqa: F401  (registers the built-in rules)
from vidxai.xai import engine as _engine  # noqa: F401  (registers the tokens propagator)
from vidxai.xai.cnn import Compiler, Step, register_layer
from vidxai.xai.composites import box_bounds
from vidxai.xai.explainer import Explanation, VideoLRP
from vidxai.xai.propagators import PropagatorContext, StageRelevance, register_propagator
from vidxai.xai.rules import (
    RULES,
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    LinearRule,
    Norm,
    Pass,
    RuleSpec,
    WinnerTakeAll,
    ZBox,
    ZPlus,
    get_rule,
    make_composite,
    register_composite,
    register_rule,
    resolve_rule,
)

__all__ = [
    "RULES",
    "AlphaBeta",
    "Compiler",
    "Composite",
    "Epsilon",
    "Explanation",
    "Flat",
    "Gamma",
    "LinearRule",
    "Norm",
    "Pass",
    "PropagatorContext",
    "RuleSpec",
    "StageRelevance",
    "Step",
    "VideoLRP",
    "WinnerTakeAll",
    "ZBox",
    "ZPlus",
    "box_bounds",
    "get_rule",
    "make_composite",
    "register_composite",
    "register_layer",
    "register_propagator",
    "register_rule",
    "resolve_rule",
]
