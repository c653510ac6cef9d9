"""How faithful are explanations? Methods and scores behind registries, perturbation, ground truth, randomisation.

* :mod:`~vidxai.evaluation.registry`: ``register_metric`` / ``register_method`` (and ``register_family``: how a
  family of methods is drawn), the extension points; :mod:`~vidxai.evaluation.curves`: ``register_curve``, the
  flipping curves (order, AOPC score, figure label) that the runner, the scores and the figures read;
* :mod:`~vidxai.evaluation.methods`: every LRP rule and the Captum baselines as ``method(clip, target) -> (T, H, W)``;
* :mod:`~vidxai.evaluation.scores`: the built-in scores (AOPC, ground truth, MPRT/eMPRT/sMPRT, control);
* :mod:`~vidxai.evaluation.perturbation` / :mod:`~vidxai.evaluation.road`: flipping curves (batched), AOPC,
  replacement values and ROAD imputation;
* :mod:`~vidxai.evaluation.mprt` / :mod:`~vidxai.evaluation.randomisation`: parameter randomisation;
* :mod:`~vidxai.evaluation.metrics`: ground-truth scores of one map (mass, rank, pointing, temporal);
* :mod:`~vidxai.evaluation.stats`: paired bootstrap CIs, Wilcoxon, Holm;
* :mod:`~vidxai.evaluation.core`: the shared types (settings, clip, shard, run control) every module
  below imports, so none imports another's insides (no import cycle);
* :mod:`~vidxai.evaluation.runner`: :func:`evaluate` over a list of clips; :mod:`~vidxai.evaluation.summary`:
  means, comparisons, verdicts and tables; :mod:`~vidxai.evaluation.selection`: which videos.
"""

from vidxai.evaluation import attention_methods as _attention_methods  # noqa: F401  (registers its methods)
from vidxai.evaluation.curves import register_curve
from vidxai.evaluation.methods import BASELINE_METHODS, Method, build_method, default_methods, last_conv_layer
from vidxai.evaluation.mprt import cascade_steps, randomised_cascade, spearman
from vidxai.evaluation.perturbation import BASELINES, aopc, flipping_curves, replacement
from vidxai.evaluation.registry import (
    METHODS,
    METRICS,
    BuildContext,
    NotApplicable,
    ScoreInput,
    register_method,
    register_metric,
)
from vidxai.evaluation.runner import CURVES, EvalClip, EvalSettings, evaluate

__all__ = [
    "BASELINES",
    "BASELINE_METHODS",
    "CURVES",
    "METHODS",
    "METRICS",
    "BuildContext",
    "EvalClip",
    "EvalSettings",
    "Method",
    "NotApplicable",
    "ScoreInput",
    "aopc",
    "build_method",
    "cascade_steps",
    "default_methods",
    "evaluate",
    "flipping_curves",
    "last_conv_layer",
    "randomised_cascade",
    "register_curve",
    "register_method",
    "register_metric",
    "replacement",
    "spearman",
]
