"""LRP through video transformers: LayerNorm, attention (AttnLRP or CP-LRP), GELU, residuals, token pooling.

The rules (Achtibat et al., "AttnLRP", ICML 2024; Ali et al. 2022 for CP-LRP), each a custom autograd Function
whose backward maps relevance to relevance, so one ``torch.autograd.grad`` propagates it like a gradient:

- ``Linear`` (q, k, v, qkv, output and MLP projections, TimeSformer's ``temporal_dense``): the chosen rule of the
  composite's main layers (``composite.conv``: epsilon by default, gamma allowed); the tubelet / patch
  embedding (``Conv3d`` / ``Conv2d``) gets the first-layer rule (``composite.rule_for(conv, is_first=True)``).
- ``LayerNorm``: ``y = (x - mean(x)) * w / std + b`` with ``std`` held constant (identity rule on the
  normalisation) and the epsilon rule on the affine map that remains (mean subtraction, scale, bias):
  ``R_x = x * (g - mean(g))``, ``g = w / std * R / (y + eps sign(y))``; LXT's ``layer_norm``.
- GELU: identity (the relevance passes unchanged).
- Residual additions, mean pooling over tokens, TimeSformer's mean of the CLS token over frames: the
  proportional sum rule (:class:`vidxai.xai.rules.Norm`).
- Attention, ``attention_rule="attnlrp"``: ``softmax`` by its deep-Taylor rule ``R_x = x * (R - p * sum(R))``
  (``x`` the scaled scores, ``p`` the probabilities); the products ``Q K^T`` and ``A V`` by the epsilon rule,
  split uniformly between the two operands (``R / (2 z + eps sign(z))``, LXT's ``matmul``); fused into one
  Function (:class:`_AttnLRPFunction`). ``attention_rule="cp"``: the attention weights are constants (no
  relevance reaches Q and K), ``A V`` is a linear map of ``V`` with the epsilon rule.
- Constants: the position embeddings (VideoMAE's fixed sinusoidal table, TimeSformer's learned space and time
  tables) and TimeSformer's CLS token are added to / joined with the tokens; the sum rule gives them their
  proportional share, which is *absorbed* like a bias share (it does not reach the pixels). It is reported per
  sample (:attr:`TokenTrace.constants`; ``Explanation.initial_state``: ``position_l0``, ``time_l0``,
  ``cls_token_l0``) so the budget can be checked.

Conservation with biases zeroed: the linear layers, LayerNorm (``sum_i x_i (g_i - mean g) = sum_k y_k s_k``
without bias), GELU, the sums and both attention products conserve up to their stabilisers, so CP-LRP conserves
as a whole (measured on tiny models: ``1 - 2e-11``, ``1 - 1.4e-9``). AttnLRP's softmax rule does not: the sum
changes by ``sum_i x_i (R_i - p_i sum R) - sum R``, which depends on the scores (measured: x1.003-1.010 on a tiny
VideoMAE, x0.47 on a tiny TimeSformer). The constants above absorb their share. See ``docs/lrp_attention.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage
from vidxai.xai.cnn import Compiler, Step, register_layer
from vidxai.xai.propagators import PropagatorContext, StageRelevance, register_propagator
from vidxai.xai.rules import (
    STABILIZER,
    Composite,
    LinearOp,
    LRPLinearFunction,
    Norm,
    Pass,
    epsilon_relevance,
    residual_sum,
    stabilize,
)

__all__ = [
    "ATTENTION_RULES",
    "DEFAULT_ATTENTION_RULE",
    "GradientTrace",
    "TokenTrace",
    "TokensPropagator",
    "check_attention_rule",
    "layer_norm",
    "register_block",
    "split_heads",
    "token_forward",
]

#: The attention rules, the default first.
ATTENTION_RULES: tuple[str, ...] = ("attnlrp", "cp")
DEFAULT_ATTENTION_RULE = "attnlrp"


def check_attention_rule(rule: Any) -> str:
    """``rule`` if it is a known attention rule; one clear :class:`ConfigError` otherwise."""
    if rule not in ATTENTION_RULES:
        raise ConfigError(f"unknown attention_rule {rule!r}; choose one of {list(ATTENTION_RULES)}")
    return rule


# ----------------------------------------------------------------------------------------- rule functions
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


def _probabilities(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale)``: computed in the forward and again in the backward, like the gradient of
    fused (flash) attention, so the ``n x n`` map is not kept between the passes."""
    return torch.softmax((q @ k.transpose(-1, -2)).mul_(scale), dim=-1)


def _merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d) -> (B, N, heads * d)`` (a copy: the input of the output projection)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, N, heads * d) -> (B, heads, N, d)`` (a view where the layout allows): the inverse of
    :func:`_merge_heads` (also the heads of a q, k or v projection)."""
    b, n, hd = x.shape
    return x.reshape(b, n, heads, hd // heads).transpose(1, 2)


class _AttentionFunction(torch.autograd.Function):
    """``softmax(q k^T * scale) v`` with the heads merged; keeps ``q, k, v`` and the output (the probabilities are
    recomputed in a subclass's backward, the attention rule)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float, stab: float) -> Tensor:
        out = _merge_heads(_probabilities(q, k, scale) @ v)
        ctx.scale, ctx.stab = scale, stab
        ctx.save_for_backward(q, k, v, out)
        return out


class _AttnLRPFunction(_AttentionFunction):
    """``softmax(q k^T * scale) v`` with the AttnLRP rules, fused: one backward costs about one gradient.

    Composed, the rules are: ``A V`` uniform epsilon (``s = R / (2 z + eps sign z)``, ``R_A = A * (s V^T)``,
    ``R_V = V * (A^T s)``), softmax deep-Taylor (``R_x = x * (R_A - A * sum R_A)`` with ``x`` the scaled scores)
    and ``q k^T`` uniform epsilon (``R_x / (2 x)``). The softmax rule multiplies by ``x`` and the product rule
    divides by ``2 x``, so their composition is exactly ``(R_A - A * sum R_A) / 2``: no stabiliser is needed
    there (LXT's stabiliser on that division changes it by ``eps / (2 |x|)``). No ``n x n`` buffer is kept between
    the passes: the backward recomputes the probabilities (:func:`_probabilities`), then does the same ``n x n``
    work as the gradient of attention. The output has the heads merged (``(B, N, heads * d)``), the one tensor
    kept for the rule and the output projection's input.
    """

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple:
        q, k, v, out = ctx.saved_tensors
        probs = _probabilities(q, k, ctx.scale)
        s = split_heads(relevance / stabilize(2.0 * out, ctx.stab), q.shape[1])
        r_v = v * (probs.transpose(-1, -2) @ s)
        g = s @ v.transpose(-1, -2)  # R_A = A * g
        total = torch.linalg.vecdot(probs, g).unsqueeze(-1)  # sum_j R_A
        g.sub_(total).mul_(probs)  # (R_A - A sum R_A) = A (g - sum R_A): twice the scores' message
        half = 0.5 * ctx.scale
        return q * (g @ k).mul_(half), k * (g.transpose(-1, -2) @ q).mul_(half), r_v, None, None


class _CPAttentionFunction(_AttentionFunction):
    """``softmax(q k^T * scale) v`` with the weights constant (CP-LRP): no relevance reaches ``q`` and ``k``; the
    epsilon rule of the linear map ``v -> A v``. Heads merged in the output, as :class:`_AttnLRPFunction`."""

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple:
        q, k, v, out = ctx.saved_tensors
        a_t, heads = _probabilities(q, k, ctx.scale).transpose(-1, -2), q.shape[1]
        r_v = epsilon_relevance(v, out, relevance, ctx.stab, lambda s: a_t @ split_heads(s, heads))
        return None, None, r_v, None, None


class _PassLinearFunction(torch.autograd.Function):
    """``linear(fn(x))``: an activation under the identity rule, then a linear layer under its rule, in one
    Function that keeps ``x`` (the previous layer's output, kept there anyway) instead of ``fn(x)`` and
    recomputes ``fn(x)`` in the backward (as an MLP's GELU: one elementwise pass for an ``N x 4D`` buffer less)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable, weight: Tensor, bias: Tensor | None, rule: Any, op: LinearOp):
        z, saved = rule.forward(op, fn(x), weight, bias)
        ctx.fn, ctx.rule, ctx.op = fn, rule, op
        ctx.save_for_backward(x, *saved[1:])
        return z

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple:
        x, *rest = ctx.saved_tensors
        with torch.no_grad():
            a = ctx.fn(x)
        return ctx.rule.relevance(ctx.op, (a, *rest), relevance), None, None, None, None, None


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


# ----------------------------------------------------------------------------------------- propagation context
@dataclass
class TokenTrace:
    """What one LRP forward of a token stage needs: the rules and the constants whose relevance is absorbed.

    ``constants`` maps a name (``position``, ``time``, ``cls_token``) to a leaf tensor that requires grad, so the
    relevance pass can report the share each constant absorbed.
    """

    composite: Composite
    attention_rule: str = DEFAULT_ATTENTION_RULE
    stab: float = STABILIZER
    constants: dict[str, Tensor] = field(default_factory=dict)
    embedded: Tensor | None = None  # the tokens entering the first block

    def linear(self, x: Tensor, module: nn.Module, first: bool = False) -> Tensor:
        """A ``Linear`` / ``Conv2d`` / ``Conv3d`` layer with its rule (``first``: the embedding's first-layer rule)."""
        rule = self.composite.rule_for(module, True) if first else self.composite.conv
        bias = None if module.bias is None else module.bias.detach()
        return LRPLinearFunction.apply(x, module.weight.detach(), bias, rule, LinearOp.of(module))

    def norm(self, x: Tensor, module: nn.LayerNorm) -> Tensor:
        return layer_norm(x, module, self.stab)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """A residual addition: the composite's sum rule (Norm: proportional, computed with one message)."""
        if type(self.composite.residual) is Norm:  # a subclass may change add()
            return residual_sum(a, b, self.composite.residual.stabilizer)
        return self.composite.residual.add(a, b)

    def activation(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """GELU and the like: identity rule."""
        return self.composite.activation.apply(x, fn)

    def activated_linear(self, x: Tensor, fn: Callable[[Tensor], Tensor], module: nn.Module) -> Tensor:
        """``linear(activation(x, fn))`` (an MLP's second half); under the identity rule as one Function that
        keeps ``x`` rather than ``fn(x)``."""
        if type(self.composite.activation) is not Pass:  # another activation rule: the two steps
            return self.linear(self.activation(x, fn), module)
        bias = None if module.bias is None else module.bias.detach()
        return _PassLinearFunction.apply(x, fn, module.weight.detach(), bias, self.composite.conv, LinearOp.of(module))

    def mean(self, x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
        """A mean (token pooling, CLS over frames): proportional sum rule."""
        return self.composite.avgpool.apply(x, lambda t: t.mean(dim, keepdim=keepdim))

    def constant(self, name: str, value: Tensor, like: Tensor, batch: int) -> Tensor:
        """A constant ``(1, ...)`` added to the tokens, as a per-sample leaf ``(batch, ...)`` whose absorbed
        relevance is reported under ``name``."""
        leaf = value.detach().to(dtype=like.dtype, device=like.device).expand(batch, *value.shape[1:]).clone()
        self.constants[name] = leaf.requires_grad_(True)
        return leaf

    def attention(self, q: Tensor, k: Tensor, v: Tensor, scale: float, role: str = "joint") -> Tensor:
        """Multi-head attention ``softmax(q k^T * scale) v`` of ``(B, heads, N, d)`` inputs, under the attention
        rule; the output has its heads merged, ``(B, N, heads * d)`` (the input of the output projection).

        ``role`` says which tokens attend to which (``joint``: all tokens of a clip; TimeSformer's ``temporal``:
        one patch over the frames, ``spatial``: one frame's patches and the CLS token); :class:`GradientTrace`
        records it for the attention baselines.
        """
        fn = _CPAttentionFunction if self.attention_rule == "cp" else _AttnLRPFunction
        return fn.apply(q, k, v, scale, self.stab)


class GradientTrace(TokenTrace):
    """The plain forward (ordinary autograd, no LRP rules) that records every attention map.

    ``attentions`` lists ``(role, probabilities (B', heads, n, n))`` in forward order; the probabilities are in
    the autograd graph, so the gradient of a logit with respect to them can be taken (Chefer et al. 2021).
    """

    def __init__(self) -> None:
        super().__init__(composite=None)  # type: ignore[arg-type]
        self.attentions: list[tuple[str, Tensor]] = []

    def linear(self, x: Tensor, module: nn.Module, first: bool = False) -> Tensor:
        return LinearOp.of(module)(x, module.weight, module.bias)

    def norm(self, x: Tensor, module: nn.LayerNorm) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], module.weight, module.bias, module.eps)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def activation(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return fn(x)

    def activated_linear(self, x: Tensor, fn: Callable[[Tensor], Tensor], module: nn.Module) -> Tensor:
        return self.linear(fn(x), module)

    def mean(self, x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
        return x.mean(dim, keepdim=keepdim)

    def constant(self, name: str, value: Tensor, like: Tensor, batch: int) -> Tensor:
        return value.detach().to(dtype=like.dtype, device=like.device).expand(batch, *value.shape[1:])

    def attention(self, q: Tensor, k: Tensor, v: Tensor, scale: float, role: str = "joint") -> Tensor:
        probs = _probabilities(q, k, scale)
        self.attentions.append((role, probs))
        return _merge_heads(probs @ v)


# ----------------------------------------------------------------------------------------- block handlers
#: HF module type -> ``fn(module, hidden, trace) -> hidden`` (the LRP forward of one block or embedding).
_BLOCKS: dict[type, Callable[[nn.Module, Tensor, TokenTrace], Tensor]] = {}


def register_block(*types: type) -> Callable:
    """Register the LRP forward of a transformer block / embedding type (``fn(module, hidden, trace)``)."""

    def deco(fn: Callable[[nn.Module, Tensor, TokenTrace], Tensor]) -> Callable:
        for t in types:
            _BLOCKS[t] = fn
        return fn

    return deco


def block_handler(module: nn.Module, name: str) -> Callable[[nn.Module, Tensor, TokenTrace], Tensor]:
    """The registered LRP forward of ``module`` (exact type); one clear error naming the module otherwise."""
    from vidxai.xai import transformer  # noqa: F401  (registers the Hugging Face blocks)

    fn = _BLOCKS.get(type(module))
    if fn is None:
        known = ", ".join(sorted(t.__name__ for t in _BLOCKS))
        raise ValueError(
            f"VideoLRP cannot explain {name} ({type(module).__name__}); supported transformer blocks: {known} "
            "(add one with vidxai.xai.attention.register_block)"
        )
    return fn


def token_forward(module: nn.Module, x: Tensor, trace: TokenTrace) -> Tensor:
    """The LRP forward of a token stage (``vidxai.models.hf_stages.TokenEncoder``): clips ``(B, T, C, H, W)`` ->
    pooled features ``(B, D)``; the relevance then follows with one ``torch.autograd.grad``."""
    h = block_handler(module.embeddings, "embeddings")(module.embeddings, x, trace)
    trace.embedded = h
    for i, layer in enumerate(module.layers):
        h = block_handler(layer, f"layers.{i}")(layer, h, trace)
    if module.norm is not None:
        h = trace.norm(h, module.norm)
    pooled = trace.mean(h, 1) if module.pool == "mean" else h[:, 0]
    if module.pool_norm is not None:
        pooled = trace.norm(pooled, module.pool_norm)
    return pooled


# ----------------------------------------------------------------------------------------- the stage propagator
@register_propagator("tokens")
class TokensPropagator:
    """A transformer's token stage (``vidxai.models.hf_stages.TokenEncoder``): clips -> pooled ``(B, D)``.

    Forward: :func:`token_forward` under the rules; relevance: one ``torch.autograd.grad``. Reports
    ``feature``: the relevance of the tokens entering the first block, summed over the patches of each time step,
    ``(B, T', D)`` (``T'``: tubelets for VideoMAE, frames for TimeSformer); and, as ``initial``, the relevance the
    constants absorbed per sample (``position``, ``cls_token``, ``time``; ``Explanation.initial_state`` keys
    ``position_l0``, ...).
    """

    uses_attention = True  # VideoLRP refuses attention_rule= on a network without such a stage

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        self.module = stage.module
        self.composite = context.composite
        self.rule = check_attention_rule(context.attention_rule or DEFAULT_ATTENTION_RULE)
        block_handler(self.module.embeddings, f"{stage.name}.embeddings")  # unsupported blocks fail here
        for i, layer in enumerate(self.module.layers):
            block_handler(layer, f"{stage.name}.layers.{i}")

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        trace = TokenTrace(self.composite, self.rule)
        leaf = x.detach().requires_grad_(True)
        out = token_forward(self.module, leaf, trace)
        return out.detach(), (leaf, out, trace)

    def relevance(self, ctx: Any, r_out: Tensor) -> StageRelevance:
        leaf, out, trace = ctx
        names = list(trace.constants)
        r_in, r_tokens, *r_const = torch.autograd.grad(
            out, [leaf, trace.embedded, *trace.constants.values()], r_out, allow_unused=True
        )
        initial = {n: [torch.zeros_like(trace.constants[n]) if r is None else r] for n, r in zip(names, r_const)}
        feature = self.module.tokens_per_step(r_tokens, leaf.shape[1])
        return StageRelevance(r_in, feature=feature, initial=initial)
