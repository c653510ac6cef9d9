"""The registered LRP rules and composites (``vidxai.xai.RULES``), each with its own parameter checks.

Uniform rules (the paper's): ``z``, ``epsilon``, ``gamma``, ``alpha_beta``; iNNvestigate's presets
``preset_a_flat`` and ``preset_b_flat``; and the composites the LRP literature recommends (Kohlbrenner et
al. 2020), equal to zennit 0.5.1's of the same name: ``epsilon_gamma_box`` (``EpsilonGammaBox``),
``epsilon_plus_flat`` (``EpsilonPlusFlat``) and ``epsilon_alpha2_beta1_flat`` (``EpsilonAlpha2Beta1Flat``).
A composite covers every layer type the explainer compiles: its conv rule serves ``Conv2d`` / ``Conv3d``,
its linear rule ``Linear`` (the head included), the sum rule average pooling and residual additions.

``epsilon_gamma_box`` needs the range of the network's input: ``low = (0 - mean) / std`` and
``high = (1 - mean) / std`` per colour channel for pixels in ``[0, 1]`` normalised by ``mean`` / ``std``.
Pass them as the rule's ``low`` / ``high`` parameters, or let :class:`~vidxai.xai.VideoLRP` compute them
from the checkpoint's ``preprocess`` (``VideoLRP(net, "epsilon_gamma_box", preprocess=ck.preprocess)``);
without either, the bounds of the data pipeline's default normalisation (ImageNet mean / std, as
``VideoTransform``) are used. :func:`box_bounds` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vidxai.errors import ConfigError
from vidxai.xai.rules import (
    LINEAR_EPSILON,
    STABILIZER,
    Z_EPSILON,
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    ZBox,
    ZPlus,
    at_least,
    numbers,
    register_rule,
)

__all__ = ["DEFAULT_MEAN", "DEFAULT_STD", "box_bounds"]

#: The data pipeline's default normalisation (``vidxai.data.transforms.VideoTransform``: ImageNet's).
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
#: zennit's default epsilon of the linear layers in its named composites.
ZENNIT_EPSILON = 1e-6


def box_bounds(mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD) -> dict[str, list[float]]:
    """``{"low": [...], "high": [...]}``: the range of pixels in ``[0, 1]`` after ``(x - mean) / std``."""
    if len(mean) != len(std) or any(float(s) <= 0 for s in std):
        raise ConfigError(f"box bounds need one positive std per mean, got mean={list(mean)}, std={list(std)}")
    return {
        "low": [(0.0 - float(m)) / float(s) for m, s in zip(mean, std)],
        "high": [(1.0 - float(m)) / float(s) for m, s in zip(mean, std)],
    }


# ------------------------------------------------------------------------------------ parameter checks
def _alpha_beta(rule: str, values: dict[str, Any]) -> dict[str, Any]:
    """``beta_sign`` (``standard``: alpha - beta = 1; ``paper``: alpha + beta = 1, beta <= 0) and the sum."""
    sign = values.get("beta_sign")
    if sign not in ("standard", "paper"):
        raise ConfigError(
            f"rule {rule!r}: beta_sign={sign!r} is invalid; use 'standard' "
            "(alpha - beta = 1) or 'paper' (alpha + beta = 1, the paper's plus-signed beta)"
        )
    if sign == "paper":
        alpha, beta = values["alpha"], values["beta"]
        if not math.isclose(alpha + beta, 1.0, abs_tol=1e-9) or beta > 0:
            raise ConfigError(
                f"rule {rule!r} with beta_sign='paper' needs alpha + beta = 1 and beta <= 0 "
                f"(the paper's beta is minus ours), got alpha={alpha}, beta={beta}; e.g. alpha=2, beta=-1"
            )
        values["beta"] = -beta + 0.0  # paper's plus-signed beta -> our convention (+0.0 avoids -0.0)
        values["beta_sign"] = "standard"
    at_least(0.0, "alpha", "beta")(rule, values)
    if not math.isclose(values["alpha"] - values["beta"], 1.0, abs_tol=1e-9):
        raise ConfigError(
            f"rule {rule!r} needs alpha - beta = 1, got alpha={values['alpha']}, beta={values['beta']}; "
            "e.g. alpha=2, beta=1 or alpha=1, beta=0 (for the paper's alpha + beta = 1 pass beta_sign='paper')"
        )
    return values


def _bound(rule: str, key: str, value: Any) -> float | list[float] | None:
    if value is None:
        return None
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not items or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in items
    ):
        raise ConfigError(
            f"rule {rule!r}: {key}={value!r} must be a finite number or one per input channel, e.g. "
            "low=[-2.118, -2.036, -1.804] for ImageNet normalisation (see vidxai.xai.composites.box_bounds)"
        )
    floats = [float(v) for v in items]
    return floats if isinstance(value, Sequence) else floats[0]


def _box(rule: str, values: dict[str, Any]) -> dict[str, Any]:
    """``low`` / ``high``: both unset (``None``: from the preprocess) or both set, ``low < high`` everywhere."""
    low, high = _bound(rule, "low", values["low"]), _bound(rule, "high", values["high"])
    if (low is None) != (high is None):
        raise ConfigError(f"rule {rule!r}: set both low and high, or neither (then they come from the preprocess)")
    if low is not None:
        lows = low if isinstance(low, list) else [low]
        highs = high if isinstance(high, list) else [high]
        if len(lows) != len(highs) and 1 not in (len(lows), len(highs)):
            raise ConfigError(f"rule {rule!r}: low has {len(lows)} values and high {len(highs)}; give as many")
        if any(lo >= hi for lo, hi in zip(lows * len(highs), highs * len(lows))):
            raise ConfigError(f"rule {rule!r}: low={low} must be below high={high} in every channel")
    values["low"], values["high"] = low, high
    return values


def _epsilon_positive(rule: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check: ``epsilon`` is a finite number > 0."""
    numbers("epsilon")(rule, values)
    at_least(0.0, "epsilon")(rule, values)
    if values["epsilon"] == 0:
        raise ConfigError(f"rule {rule!r}: epsilon must be > 0 (use rule='z' for LRP-0)")
    return values


# ------------------------------------------------------------------------------------ the rules
@register_rule("z", "LRP-0: epsilon rule with a tiny stabiliser on every layer")
def _z() -> Composite:
    rule = Epsilon(Z_EPSILON)
    return Composite(conv=rule, linear=rule)


@register_rule(
    "epsilon", "LRP-epsilon on conv and linear layers", {"epsilon": 0.1},
    [_epsilon_positive],
)  # fmt: skip
def _epsilon(epsilon: float) -> Composite:
    rule = Epsilon(epsilon)
    return Composite(conv=rule, linear=rule)


@register_rule(
    "gamma", "LRP-gamma on conv layers, epsilon on linear layers", {"gamma": 0.25, "epsilon": LINEAR_EPSILON},
    [numbers("gamma"), at_least(0.0, "gamma"), _epsilon_positive],
)  # fmt: skip
def _gamma(gamma: float, epsilon: float) -> Composite:
    return Composite(conv=Gamma(gamma), linear=Epsilon(epsilon))


@register_rule(
    "alpha_beta", "LRP-alpha-beta on conv layers (alpha - beta = 1), epsilon on linear layers",
    {"alpha": 2.0, "beta": 1.0, "epsilon": LINEAR_EPSILON, "beta_sign": "standard"},
    [numbers("alpha", "beta"), _epsilon_positive, _alpha_beta],
)  # fmt: skip
def _alpha_beta_rule(alpha: float, beta: float, epsilon: float, beta_sign: str) -> Composite:
    return Composite(conv=AlphaBeta(alpha, beta), linear=Epsilon(epsilon))


_EPS_CHECKS = [_epsilon_positive]


@register_rule(
    "preset_a_flat", "iNNvestigate PresetAFlat: z-plus on conv, epsilon on linear, flat on the first layer",
    {"epsilon": LINEAR_EPSILON}, _EPS_CHECKS,
)  # fmt: skip
def _preset_a_flat(epsilon: float) -> Composite:
    return Composite(conv=ZPlus(), linear=Epsilon(epsilon), first=Flat())


@register_rule(
    "preset_b_flat", "iNNvestigate PresetBFlat: alpha 2 beta 1 on conv, epsilon on linear, flat on the first layer",
    {"epsilon": LINEAR_EPSILON}, _EPS_CHECKS,
)  # fmt: skip
def _preset_b_flat(epsilon: float) -> Composite:
    return Composite(conv=AlphaBeta(2.0, 1.0), linear=Epsilon(epsilon), first=Flat())


@register_rule(
    "epsilon_gamma_box",
    "zennit EpsilonGammaBox: z^B on the first conv (input bounds low/high), gamma on conv, epsilon on linear",
    {"gamma": 0.25, "epsilon": ZENNIT_EPSILON, "low": None, "high": None},
    [numbers("gamma"), at_least(0.0, "gamma"), _epsilon_positive, _box],
)  # fmt: skip
def _epsilon_gamma_box(gamma: float, epsilon: float, low: Any, high: Any) -> Composite:
    if low is None:  # VideoLRP fills them from the preprocess; a bare composite uses the default normalisation
        low, high = box_bounds()["low"], box_bounds()["high"]
    first = ZBox(low, high, STABILIZER)
    return Composite(conv=Gamma(gamma), linear=Epsilon(epsilon), first=first, first_conv_only=True)


@register_rule(
    "epsilon_plus_flat", "zennit EpsilonPlusFlat: flat on the first layer, z-plus on conv, epsilon on linear",
    {"epsilon": ZENNIT_EPSILON}, _EPS_CHECKS,
)  # fmt: skip
def _epsilon_plus_flat(epsilon: float) -> Composite:
    return Composite(conv=ZPlus(), linear=Epsilon(epsilon), first=Flat())


@register_rule(
    "epsilon_alpha2_beta1_flat",
    "zennit EpsilonAlpha2Beta1Flat: flat on the first layer, alpha 2 beta 1 on conv, epsilon on linear",
    {"epsilon": ZENNIT_EPSILON}, _EPS_CHECKS,
)  # fmt: skip
def _epsilon_alpha2_beta1_flat(epsilon: float) -> Composite:
    return Composite(conv=AlphaBeta(2.0, 1.0), linear=Epsilon(epsilon), first=Flat())


def fill_box_bounds(params: Mapping[str, Any], preprocess: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with ``low`` / ``high`` from ``preprocess``'s mean / std where the rule has them unset."""
    out = dict(params)
    if "low" in out and out.get("low") is None and out.get("high") is None:
        pre = dict(preprocess or {})
        out.update(box_bounds(pre.get("mean", DEFAULT_MEAN), pre.get("std", DEFAULT_STD)))
    return out
