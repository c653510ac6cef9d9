"""The attention rules' names, and the LayerNorm rule as a registered layer (a LayerNorm in a compiled head).

Transformers are explained through their own forward by :mod:`vidxai.xai.engine` (the rules given to the torch
functions the forward calls: AttnLRP or CP-LRP for attention, LayerNorm with ``std`` held constant, the identity
rule for activations, the composite's rules for the linear layers); ``docs/lrp_attention.md`` states every rule.
Here: :data:`ATTENTION_RULES` and their check, and ``nn.LayerNorm`` for the layer compiler (relevance form: the
identity rule on ``1/std`` and the epsilon rule on the rest, LXT's ``layer_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.xai.cnn import Compiler, Step, register_layer
from vidxai.xai.rules import STABILIZER, Composite, stabilize

__all__ = ["ATTENTION_RULES", "ATTENTION_RULE_LABELS", "DEFAULT_ATTENTION_RULE", "check_attention_rule", "layer_norm"]

#: The attention rules, the default first.
ATTENTION_RULES: tuple[str, ...] = ("attnlrp", "cp")
#: How the papers name them (the evaluation's reports say ``epsilon (AttnLRP)``, ``epsilon/cp (CP-LRP)``).
ATTENTION_RULE_LABELS: dict[str, str] = {"attnlrp": "AttnLRP", "cp": "CP-LRP"}
DEFAULT_ATTENTION_RULE = "attnlrp"


def check_attention_rule(rule: Any) -> str:
    """``rule`` if it is a known attention rule; one clear :class:`ConfigError` otherwise."""
    if rule not in ATTENTION_RULES:
        raise ConfigError(f"unknown attention_rule {rule!r}; choose one of {list(ATTENTION_RULES)}")
    return rule


class _LayerNormFunction(torch.autograd.Function):
    """``F.layer_norm`` with the identity rule on ``1/std`` and the epsilon rule on the rest (LXT ``layer_norm``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, ln_eps: float, stab: float) -> Tensor:
        y, _, rstd = torch.native_layer_norm(x, x.shape[-1:], weight, bias, ln_eps)
        ctx.stab = stab
        ctx.save_for_backward(x, rstd, y, weight)
        return y

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple:
        x, rstd, y, weight = ctx.saved_tensors
        g = stabilize(y, ctx.stab)
        torch.div(relevance, g, out=g)
        g.mul_(rstd)
        if weight is not None:
            g.mul_(weight)
        g.sub_(g.mean(-1, keepdim=True))
        return g.mul_(x), None, None, None, None


def layer_norm(x: Tensor, module: nn.LayerNorm, stab: float = STABILIZER) -> Tensor:
    """``module(x)`` (a ``LayerNorm`` over the last dimension) with the LRP rule of :class:`_LayerNormFunction`."""
    _check_layer_norm(module, type(module).__name__)
    weight = None if module.weight is None else module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()
    return _LayerNormFunction.apply(x, weight, bias, module.eps, stab)


def _check_layer_norm(module: nn.Module, name: str) -> None:
    if not isinstance(module, nn.LayerNorm) or len(module.normalized_shape) != 1:
        raise ConfigError(f"VideoLRP cannot explain {name}: LayerNorm over the last dimension only, got {module!r}")


@dataclass
class LayerNormStep(Step):
    """``nn.LayerNorm`` (last dimension) in a compiled sequence (a head, a CNN stage): the LayerNorm rule."""

    kind: ClassVar[str] = "layernorm"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return layer_norm(x, self.module, composite.residual.stabilizer)


@register_layer(nn.LayerNorm)
def _layer_norm_handler(compiler: Compiler, name: str, module: nn.Module) -> None:
    _check_layer_norm(module, name)
    compiler.add(LayerNormStep(name, module))
    compiler.nonnegative = False
