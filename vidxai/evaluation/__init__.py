"""How faithful are explanations? Methods behind one interface, perturbation and ground-truth scores, MPRT.

* :mod:`~vidxai.evaluation.methods`: every LRP rule and the Captum baselines as ``method(clip, target) -> (T, H, W)``;
* :mod:`~vidxai.evaluation.perturbation`: frame/region flipping curves (batched) and AOPC;
* :mod:`~vidxai.evaluation.mprt`: cascading model-parameter randomisation along the explainer stages;
* :mod:`~vidxai.evaluation.runner`: :func:`evaluate` over a list of clips (ground-truth scores from
  :mod:`vidxai.xai.metrics`).
"""

from vidxai.evaluation.methods import BASELINE_METHODS, Method, build_method, default_methods, last_conv_layer
from vidxai.evaluation.mprt import cascade_steps, randomised_cascade, spearman
from vidxai.evaluation.perturbation import BASELINES, aopc, flipping_curves, replacement
from vidxai.evaluation.runner import CURVES, GROUND_TRUTH_SCORES, PERTURBATION_SCORES, EvalClip, EvalSettings, evaluate

__all__ = [
    "BASELINES",
    "BASELINE_METHODS",
    "CURVES",
    "GROUND_TRUTH_SCORES",
    "PERTURBATION_SCORES",
    "EvalClip",
    "EvalSettings",
    "Method",
    "aopc",
    "build_method",
    "cascade_steps",
    "default_methods",
    "evaluate",
    "flipping_curves",
    "last_conv_layer",
    "randomised_cascade",
    "replacement",
    "spearman",
]
