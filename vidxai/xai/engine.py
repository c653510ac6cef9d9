"""LRP through a network's own forward: the rules given to the torch functions it calls (LXT's efficient mode).

While :class:`RuleEngine` is active (a context manager), the model runs its own ``forward`` unchanged and a
:class:`torch.overrides.TorchFunctionMode` hands every torch function it calls on a tensor derived from the
explained input (a *tracked* tensor) to the function's rule. The rules are written in the Gradient x Input
form: each rule-carrying function has the ordinary forward and a backward that returns ``R_in / x``, so the
relevance of any tensor ``t`` is ``t * dL/dt`` after one modified backward pass, and operations that are linear
in the tracked tensors (reshapes, concatenations, sums, means, additions, products with constants, indexing,
padding, average pooling) need no rule: their gradient *is* the proportional (sum) rule.

================================  ===========================================================================
function                          rule
================================  ===========================================================================
``linear``, ``conv1d/2d/3d``      the composite's rule (epsilon / z / gamma / alpha-beta / ...); the first
                                  one on the input the composite's first-layer rule (the tubelet / patch
                                  embedding); epsilon: ``grad_x = W^T (grad_z * z / (z + eps sign z))``
``layer_norm``, ``rms_norm``      identity on the normalisation (``std`` held constant), epsilon on the rest
``gelu``, ``silu``, ``tanh``,     identity rule: ``R_x = R_y`` (``grad_x = grad_y * f(x) / x``)
``sigmoid``, ``relu``, ...
``softmax``                       AttnLRP: its deep-Taylor rule ``R_x = x (R - p sum R)``, in the Gradient x
                                  Input form the plain softmax gradient; CP-LRP: output held constant
``matmul``, ``bmm``, ``mul``      of two tracked operands: the uniform rule (the gradient halved for both,
(tracked x tracked)               LXT ``divide_gradient``; a matrix product is one node keeping its operands
                                  as given, not copies); with one constant operand: linear (plain)
``scaled_dot_product_attention``  decomposed into the three functions above
``max_pool``, ``amax``, ``max``   winner takes all (the plain gradient)
================================  ===========================================================================

``transformers`` models compute attention through their attention interface: while the engine is active every
``config._attn_implementation`` of the model is set to ``"vidxai_lrp"`` (registered with
``AttentionInterface.register``), an explicit eager attention (scores, optional soft cap by ``tanh``, mask,
softmax, weighted sum, all in the input's dtype) whose functions the mode catches; models that call
``softmax`` / ``matmul`` themselves (TimeSformer, torchvision's MViT and Swin3D) are covered by the same mode.
A function applied to a tracked tensor that is neither ruled nor known to be linear raises one
:class:`~vidxai.errors.ConfigError` naming it (``VideoLRP cannot explain ...: it calls exp on ...``), never a
silently wrong map.

Constants joined with or added to the tracked tokens (position tables, CLS tokens, learned query tokens of a
pooling head, a time table) take their proportional share like a bias; the engine replaces each by a leaf that
requires grad at the first operation that mixes it with tracked tensors, so the share it absorbs is reported
(:attr:`RuleEngine.constants`; ``Explanation.initial_state``). RoPE multiplies queries and keys by constant
``cos`` / ``sin`` tables: linear, so no relevance is absorbed there.

Activation *modules* (``torch.nn``'s and every class of ``transformers.activations``: ViViT's fast GELU computes
with ``tanh`` and products, VideoPrism's Python GELU with ``erf``) get the identity rule as a whole: their
``forward`` is replaced on the instance for the duration (and computes the values with the mode off).

Explaining never changes the model: parameters are read (their ``requires_grad`` flags are switched off for the
duration and restored), the attention implementations of its configs and the activation modules' ``forward``
are restored, no hook is registered; all of it is restored also when the forward raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage
from vidxai.xai.attention import DEFAULT_ATTENTION_RULE, check_attention_rule
from vidxai.xai.propagators import PropagatorContext, StageRelevance, register_propagator
from vidxai.xai.rules import Composite, Epsilon, LinearOp, LinearRule

__all__ = [
    "ATTN_IMPLEMENTATION",
    "supports",
    "EnginePropagator",
    "ModelInfo",
    "Recorder",
    "RuleEngine",
    "StopAt",
    "lrp_attention",
]

#: The name of vidxai's attention function in ``transformers``' ``AttentionInterface``.
ATTN_IMPLEMENTATION = "vidxai_lrp"


# ----------------------------------------------------------------------------------------- rule Functions
def _safe_div(r: Tensor, x: Tensor) -> Tensor:
    """``r / x`` with ``0`` where ``x == 0`` (a relevance ``x * g`` is 0 there)."""
    return torch.where(x == 0, 0.0, r / x)


def _ratio(z: Tensor, eps: float) -> Tensor:
    """``z / stabilize(z, eps)`` as ``|z| / (|z| + eps)``: bit for bit the same value (the signs cancel; only
    the sign of a zero may differ), in three elementwise passes instead of five."""
    a = z.abs()
    return a.div_(a + eps)


class _EpsilonLinear(torch.autograd.Function):
    """``op(x, W, b)`` with the epsilon rule in Gradient x Input form: ``grad_x = W^T (grad_z z / stab(z))``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, op: LinearOp, eps: float) -> Tensor:
        z = op(x, weight, bias)
        ctx.op, ctx.eps, ctx.shape = op, eps, x.shape
        ctx.save_for_backward(weight, z)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        weight, z = ctx.saved_tensors
        return ctx.op.input_grad(ctx.shape, weight, _ratio(z, ctx.eps).mul_(grad)), None, None, None, None


class _RuleLinear(torch.autograd.Function):
    """``op(x, W, b)`` with any :class:`LinearRule`: ``R_z = z grad``, ``R_x`` by the rule, ``grad_x = R_x / x``
    (exact for the rules whose relevance is ``x`` times a message: gamma, alpha-beta, z-plus; z^B and flat give
    relevance to inputs equal to 0 too, which this form cannot carry: see docs/lrp_attention.md)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, op: LinearOp, rule: LinearRule) -> Tensor:
        z, saved = rule.forward(op, x, weight, bias)
        ctx.op, ctx.rule, ctx.n = op, rule, len(saved)
        ctx.save_for_backward(x, z, *saved)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, z, *saved = ctx.saved_tensors
        r_x = ctx.rule.relevance(ctx.op, tuple(saved), z * grad)
        return _safe_div(r_x, x), None, None, None, None


class _LayerNorm(torch.autograd.Function):
    """``layer_norm`` with ``std`` held constant (identity rule on ``1/std``), epsilon on the affine rest."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, shape: tuple, weight: Tensor | None, bias: Tensor | None, eps: float,
                stab: float) -> Tensor:
        y, _, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.stab, ctx.dims = stab, tuple(range(-len(shape), 0))
        ctx.save_for_backward(y, rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        y, rstd, weight = ctx.saved_tensors
        g = _ratio(y, ctx.stab).mul_(grad).mul_(rstd)
        if weight is not None:
            g.mul_(weight)
        return g.sub_(g.mean(ctx.dims, keepdim=True)), None, None, None, None, None


class _RMSNorm(torch.autograd.Function):
    """``rms_norm`` with ``1 / rms`` held constant: ``y = x w / rms``, linear in ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, shape: tuple, weight: Tensor | None, eps: float | None) -> Tensor:
        dims = tuple(range(-len(shape), 0))
        e = torch.finfo(x.dtype).eps if eps is None else eps
        scale = torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + e)
        if weight is not None:
            scale = scale * weight
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None, None


class _Identity(torch.autograd.Function):
    """An elementwise function with the identity rule: ``grad_x = grad_y * f(x) / x`` (LXT
    ``identity_rule_implicit``). Keeps ``x`` (kept by the layer before anyway) and recomputes ``f(x)`` in the
    backward, as a gradient keeps an activation's input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.fn = fn
        ctx.save_for_backward(x)
        return fn(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        (x,) = ctx.saved_tensors
        with torch.no_grad(), torch._C.DisableTorchFunction():
            return _safe_div(ctx.fn(x), x).mul_(grad), None


class _Uniform(torch.autograd.Function):
    """The identity forward whose backward scales the gradient (by 1/2 by default): after a product of two
    tracked operands it is the uniform rule (each operand gets half; LXT ``divide_gradient``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float = 0.5) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        return grad * ctx.factor, None


class _Scale(torch.autograd.Function):
    """:class:`_Uniform` for several tensors in one autograd node (the operands of one attention): the identity
    forward, each gradient scaled by its factor."""

    @staticmethod
    def forward(ctx: Any, factors: tuple[float, ...], *xs: Tensor) -> tuple[Tensor, ...]:
        ctx.factors = factors
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple:
        return (None, *(None if g is None else g * f for g, f in zip(grads, ctx.factors)))


class _Product(torch.autograd.Function):
    """``a @ b`` of two tracked operands under the uniform rule (each operand gets half the gradient; LXT
    ``divide_gradient``), in one autograd node that keeps the operands as given: the views of an explicit
    attention (query, key and value sliced from a linear layer's output, which the epsilon rule keeps anyway; the
    softmax output, which its backward keeps) cost no memory, where ``torch.matmul`` keeps contiguous copies of
    batched operands."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return torch.matmul(a, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        a, b = ctx.saved_tensors
        early = grad.numel() <= a.numel() + b.numel()  # halve the smaller side: one pass less over an n x n map
        g = grad * 0.5 if early else grad
        ga, gb = g @ b.mT, a.mT @ g
        ga = ga if ga.shape == a.shape else ga.sum_to_size(a.shape)
        gb = gb if gb.shape == b.shape else gb.sum_to_size(b.shape)
        return (ga, gb) if early else (ga.mul_(0.5), gb.mul_(0.5))


def _detached(t: Tensor | None) -> Tensor | None:
    """``t`` cut from autograd (a parameter, frozen for the duration of an explanation, is already)."""
    return t.detach() if t is not None and t.requires_grad else t


# ----------------------------------------------------------------------------------------- op tables
#: elementwise activations: the identity rule
_ACTIVATIONS = {"gelu", "silu", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "selu", "celu", "mish", "hardswish",
                "hardsigmoid", "hardtanh", "softplus", "relu6"}
#: functions that are linear (or piecewise-linear selections) in their tracked arguments, or only read metadata:
#: their plain gradient is the proportional rule
_LINEAR = {
    "__get__", "__set__", "size", "dim", "numel", "is_floating_point", "is_contiguous", "stride", "element_size",
    "data_ptr", "is_complex", "get_device", "__len__", "__bool__", "__format__", "__repr__", "__hash__",
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "flatten", "unflatten", "squeeze",
    "unsqueeze", "contiguous", "expand", "expand_as", "repeat", "repeat_interleave", "narrow", "select",
    "__getitem__", "__setitem__", "index_select", "gather", "take_along_dim", "chunk", "split", "unbind",
    "tensor_split", "movedim", "moveaxis", "swapaxes", "roll", "flip", "cat", "concat", "concatenate", "stack",
    "pad", "clone", "detach", "to", "type", "type_as", "float", "double", "half", "bfloat16", "cpu", "cuda",
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_", "neg",
    "__neg__", "negative", "sum", "mean", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "amax", "max", "interpolate", "masked_fill", "masked_fill_", "where", "zeros_like",
    "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "requires_grad_",
    "copy_", "identity", "tril", "triu", "diagonal", "einsum_linear", "is_inference", "__contains__",
    "__iter__", "__reversed__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "eq", "ne", "lt",
    "le", "gt", "ge", "isnan", "isinf", "isfinite", "all", "any", "argmax", "argmin", "sign", "item", "tolist",
    "__array__", "numpy", "detach_", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold", "channel_shuffle",
    "native_channel_shuffle", "flatten_dense_tensors", "as_strided", "split_with_sizes", "unsafe_split",
    "broadcast_to", "broadcast_tensors", "atleast_1d", "atleast_2d", "atleast_3d", "ravel",
}
#: the functions that join or add (where an untracked constant is swapped for a reported leaf)
_JOINS = {"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "cat", "concat",
          "concatenate", "stack"}
#: linear functions with nothing to do: called at once, without looking at their arguments (speed)
_STRUCTURAL = frozenset(_LINEAR - _JOINS)
#: ``func -> name`` (``__name__`` lookups are slow)
_NAMES: dict[Any, str] = {}
_MATMULS = {"matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm"}
#: matrix products whose operands are ``(a, b)`` in that order (``__rmatmul__`` swaps them)
_PRODUCTS = {"matmul", "__matmul__", "bmm", "mm"}
_MULS = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"}
_DIVS = {"div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"}
_SOFTMAX = {"softmax", "_softmax"}


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, Tensor):
                yield v


def _any_tracked(values: Any) -> bool:
    """Whether a tensor among ``values`` (or in a list / tuple among them) requires grad."""
    for v in values:
        if isinstance(v, Tensor):
            if v.requires_grad:
                return True
        elif isinstance(v, (list, tuple)) and any(isinstance(t, Tensor) and t.requires_grad for t in v):
            return True
    return False


def _is_tracked(t: Any) -> bool:
    return isinstance(t, Tensor) and t.requires_grad


# ----------------------------------------------------------------------------------------- the engine
@dataclass
class _Record:
    """What one explained forward leaves for the relevance pass."""

    constants: dict[str, Tensor] = field(default_factory=dict)  # name -> leaf (requires grad)
    first_out: Tensor | None = None  # the output of the first layer (patch / tubelet embedding)
    first_kind: str | None = None
    attentions: list[Tensor] = field(default_factory=list)  # attention probabilities in forward order


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, value: Tensor) -> None:
        super().__init__("stop")
        self.value = value


class StopAt(TorchFunctionMode):
    """Runs a forward up to the call of ``linear`` with ``weight`` (the classifier) and returns that call's input:
    the pooled features the classifier sees (how a model's own forward gives its body's output)."""

    def __init__(self, weight: Tensor | None) -> None:
        super().__init__()
        self.weight = weight

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.weight is not None and getattr(func, "__name__", "") == "linear":
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            if w is self.weight:
                raise _Stop(args[0] if args else kwargs["input"])
        return func(*args, **kwargs)

    @staticmethod
    def run(fn: Callable[[], Any], weight: Tensor | None, mode: TorchFunctionMode | None = None) -> Tensor:
        """``fn()`` under ``mode`` (or a plain :class:`StopAt`) until the classifier; its input."""
        try:
            with mode if mode is not None else StopAt(weight):
                fn()
        except _Stop as stop:
            return stop.value
        raise ConfigError("the forward never called its classifier (the last nn.Linear): cannot split body and head")


class _RuleMode(StopAt):
    """The :class:`TorchFunctionMode` of :class:`RuleEngine`: rules for the functions called on tracked tensors."""

    def __init__(self, engine: RuleEngine, stop_weight: Tensor | None) -> None:
        super().__init__(stop_weight)
        self.engine = engine

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = _NAMES.get(func)
        if name is None:
            name = _NAMES[func] = getattr(func, "__name__", None) or repr(func)
        if name in _STRUCTURAL and not self.engine.sees_all:  # linear, no constant to swap: no work
            return func(*args, **kwargs)
        if self.weight is not None and name == "linear":
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            if w is self.weight:
                raise _Stop(args[0] if args else kwargs["input"])
        if not self.engine.sees_all and not (_any_tracked(args) or (kwargs and _any_tracked(kwargs.values()))):
            return func(*args, **kwargs)
        return self.engine.dispatch(name, func, args, kwargs)


class ModelInfo:
    """What :class:`RuleEngine` reads from a model's modules, collected once: its configs (attention
    implementation), parameters, activation modules, and (on first use) the names of its tensors."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.configs = _configs(model)
        self.parameters = list(model.parameters())
        self.activations = [m for m in model.modules() if _is_activation(m)]
        self._names: dict[int, str] | None = None
        self._attributes: list[tuple[str, Tensor]] | None = None

    @property
    def names(self) -> dict[int, str]:
        if self._names is None:
            self._names = _tensor_names(self.model)
        return self._names

    @property
    def attributes(self) -> list[tuple[str, Tensor]]:
        if self._attributes is None:
            self._attributes = [(n, t) for n, t in _named_tensors(self.model) if t.is_floating_point()]
        return self._attributes


class RuleEngine:
    """The LRP rules in force over a model's own forward (a context manager; see the module docstring).

    Args:
        model: the module whose forward is explained (its configs' attention implementation is switched to
            :data:`ATTN_IMPLEMENTATION` for the duration, its parameters' ``requires_grad`` switched off).
        composite: which rule the linear layers get (``composite.conv`` for the layers of the body,
            the first-layer rule for the first one on the input).
        attention_rule: ``attnlrp`` or ``cp``.
        stab: the stabiliser of the LayerNorm rule.
        stop_weight: the classifier's weight: the forward stops at it (:class:`StopAt`).
        info: what the engine needs to know of the model's modules (:class:`ModelInfo`; built when not given: a
            propagator keeps one across calls).
    """

    def __init__(self, model: nn.Module, composite: Composite, attention_rule: str = "attnlrp",
                 stab: float = 1e-6, stop_weight: Tensor | None = None, info: ModelInfo | None = None) -> None:
        self.model, self.composite, self.attention_rule, self.stab = model, composite, attention_rule, stab
        self.sees_all = type(self).sees_all
        self.stop_weight = stop_weight
        self.record = _Record()
        self._first_done = False
        self.info = info if info is not None else ModelInfo(model)
        self._saved: list[tuple[Any, Any]] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []
        self._patched: list[tuple[nn.Module, Any]] = []
        self._mode: _RuleMode | None = None

    #: whether :meth:`dispatch` sees every function (not only those on tracked tensors); a recorder (no rules:
    #: parameters and activation modules left as they are)
    sees_all = False

    # -------------------------------------------------------------- context
    def __enter__(self) -> RuleEngine:
        _register_attention()
        try:
            for config in self.info.configs:
                self._saved.append((config, config.__dict__.get("_attn_implementation_internal")))
                config.__dict__["_attn_implementation_internal"] = ATTN_IMPLEMENTATION
            for p in self.info.parameters if not self.sees_all else ():
                self._flags.append((p, p.requires_grad))
                p.requires_grad_(False)
            for module in self.info.activations if not self.sees_all else ():
                self._patched.append((module, module.__dict__.get("forward")))
                module.forward = partial(_activation_forward, module.forward, getattr(module, "inplace", False))
            _ACTIVE.engine = self
            self._mode = _RuleMode(self, self.stop_weight)
            self._mode.__enter__()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._mode is not None:
                self._mode.__exit__(*exc)
        finally:
            self._restore()

    def _restore(self) -> None:
        _ACTIVE.engine = None
        for config, value in reversed(self._saved):
            config.__dict__["_attn_implementation_internal"] = value
        for p, flag in self._flags:
            p.requires_grad_(flag)
        for module, forward in reversed(self._patched):
            if forward is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = forward
        self._saved, self._flags, self._patched, self._mode = [], [], [], None

    def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` (the model's forward) under the rules; with ``stop_weight`` the classifier's input."""
        with self:
            assert self._mode is not None
            if self.stop_weight is None:
                return fn()
            try:
                fn()
            except _Stop as stop:
                return stop.value
        raise ConfigError("the forward never called its classifier (the last nn.Linear): cannot split body and head")

    # -------------------------------------------------------------- dispatch
    def dispatch(self, name: str, func: Any, args: tuple, kwargs: dict) -> Any:
        """The rule of ``func`` (called with at least one tracked tensor)."""
        if name == "linear":
            return self._linear(LinearOp("linear"), *_bind(args, kwargs, ("input", "weight", "bias")))
        if name in ("conv1d", "conv2d", "conv3d"):
            return self._conv(name, args, kwargs)
        if name == "layer_norm":
            x, shape, weight, bias, eps = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"),
                                               {"eps": 1e-5})
            return _LayerNorm.apply(x, tuple(shape), _detached(weight), _detached(bias), eps, self.stab)
        if name == "rms_norm":
            x, shape, weight, eps = _bind(args, kwargs, ("input", "normalized_shape", "weight", "eps"))
            return _RMSNorm.apply(x, tuple(shape), _detached(weight), eps)
        if name in _ACTIVATIONS:
            x = args[0] if args else kwargs.pop("input")
            rest = args[1:]
            return _Identity.apply(x, lambda t: func(t, *rest, **kwargs))
        if name in _SOFTMAX:
            out = func(*args, **kwargs)
            if self.attention_rule == "cp":
                out = out.detach()
            self.record.attentions.append(out)
            return out
        if name in _MATMULS or name in _MULS:
            operands = [a for a in args[:2] if isinstance(a, Tensor)]
            both = len(operands) == 2 and all(t.requires_grad for t in operands)
            if both and name.endswith("_"):
                raise self._uncovered(f"{name} (an in-place product of two tensors derived from the input)")
            if both and name in _PRODUCTS and not kwargs and len(args) == 2 and min(a.ndim for a in args) >= 2:
                return _Product.apply(args[0], args[1])
            if both:
                # the uniform rule on the operands (an output of a Function may not be changed in place later,
                # as MViT's relative positions do)
                args = (*_Scale.apply((0.5, 0.5), args[0], args[1]), *args[2:])
            return func(*args, **kwargs)
        if name in _DIVS:
            if len(args) > 1 and _is_tracked(args[1]):
                raise self._uncovered(f"{name} by a tensor derived from the input")
            return func(*args, **kwargs)
        if name == "scaled_dot_product_attention":
            return self.attention(*args, **kwargs)
        if name in ("einsum",):
            operands = [t for t in _tensors(args[1:] if len(args) > 1 else ()) if t.requires_grad]
            if len(args) > 2 and isinstance(args[1], Tensor):
                operands = [t for t in args[1:] if isinstance(t, Tensor) and t.requires_grad]
            out = func(*args, **kwargs)
            return _Uniform.apply(out, 0.5) if len(operands) == 2 else out
        if name in _LINEAR:
            args, kwargs = self._constants(name, args, kwargs)
            return func(*args, **kwargs)
        raise self._uncovered(name)

    def attention(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> Tensor:
        """``scaled_dot_product_attention`` under the attention rule, fused: in the Gradient x Input form the
        softmax rule is the softmax's own gradient, so AttnLRP is the fused attention's gradient with the uniform
        rule on its two products (the gradient of ``q`` and ``k`` quartered, of ``v`` halved; a constant query,
        as a pooling head's, makes ``q k^T`` linear in ``k``: halved), and CP-LRP its gradient with ``q`` and ``k``
        held constant. No ``n x n`` map is kept between the passes."""
        if self.attention_rule == "cp":
            query, key = query.detach(), key.detach()
        else:  # one autograd node scales the tracked operands
            qk = 0.25 if query.requires_grad and key.requires_grad else 0.5
            # by position, not identity: a model may pass one tensor as both query and value
            pairs = [(t, f) for t, f in ((query, qk), (key, qk), (value, 0.5)) if t.requires_grad]
            scaled = iter(_Scale.apply(tuple(f for _, f in pairs), *(t for t, _ in pairs)))
            query, key, value = (next(scaled) if t.requires_grad else t for t in (query, key, value))
        with torch._C.DisableTorchFunction():
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal,
                                                  scale=scale, enable_gqa=enable_gqa)

    def _uncovered(self, name: str) -> ConfigError:
        return ConfigError(
            f"VideoLRP cannot explain {type(self.model).__name__}: its forward calls {name} on a tensor derived from "
            "the input, which no LRP rule covers (see docs/lrp_attention.md for the covered functions)")

    def _rule(self, op: LinearOp) -> LinearRule:
        first = not self._first_done
        self._first_done = True
        c = self.composite
        if first and c.first is not None and (op.kind != "linear" or not c.first_conv_only):
            return c.first
        return c.conv

    def _linear(self, op: LinearOp, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        first = not self._first_done
        rule = self._rule(op)
        weight, bias = _detached(weight), _detached(bias)
        if type(rule) is Epsilon:
            out = _EpsilonLinear.apply(x, weight, bias, op, rule.epsilon)
        else:
            out = _RuleLinear.apply(x, weight, bias, op, rule)
        if first:
            self.record.first_out, self.record.first_kind = out, op.kind
        return out

    def _conv(self, name: str, args: tuple, kwargs: dict) -> Tensor:
        x, weight, bias, stride, padding, dilation, groups = _bind(
            args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
            {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        dims = int(name[-2])
        if dims == 1:  # LinearOp has no conv1d: as a conv2d over a height of 1
            op = LinearOp("conv2d", (1, _tup(stride, 1)[0]), _pad1(padding), (1, _tup(dilation, 1)[0]), groups)
            out = self._linear(op, x.unsqueeze(2), weight.unsqueeze(2), bias)
            return out.squeeze(2)
        if isinstance(padding, str) and padding != "valid":
            raise self._uncovered(f"{name} with padding={padding!r}")
        padding = 0 if padding == "valid" else padding
        op = LinearOp(name, _tup(stride, dims), _tup(padding, dims), _tup(dilation, dims), groups)
        return self._linear(op, x, weight, bias)

    def _constants(self, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Adding or joining an untracked tensor to tracked ones: the untracked one becomes a reported leaf."""
        if name not in _JOINS:
            return args, kwargs

        def swap(t: Any) -> Any:
            if isinstance(t, Tensor) and not t.requires_grad and t.is_floating_point() and t.numel() > 1:
                leaf = t.detach().clone().requires_grad_(True)
                self.record.constants[self._name_of(t)] = leaf
                return leaf
            return t

        if name in ("cat", "concat", "concatenate", "stack"):
            seq = args[0] if args else kwargs.pop("tensors")
            return (type(seq)(swap(t) for t in seq), *args[1:]), kwargs
        return tuple(swap(a) for a in args), kwargs

    def _name_of(self, t: Tensor) -> str:
        """The model's name of the constant ``t`` (a parameter, a view of one, or a copy of a tensor attribute)."""
        names = self.info.names
        name = names.get(id(t)) or (names.get(id(t._base)) if t._base is not None else None)
        if name is None:
            for cand, ref in self.info.attributes:
                if ref.shape == t.shape and torch.equal(ref.to(t), t):
                    name = cand
                    break
        parts = (name or "constant").split(".")
        name = parts[-1]
        if name in self.record.constants and len(parts) > 1:  # two tables of one name: their modules tell
            name = f"{parts[-2]}_{parts[-1]}"
        key, k = name, 1
        while key in self.record.constants:
            k += 1
            key = f"{name}_{k}"
        return key


#: ``torch.nn`` activation modules (elementwise): the identity rule, whatever their forward calls
_ACTIVATION_MODULES = (nn.GELU, nn.SiLU, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
                       nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus)


def _is_activation(module: nn.Module) -> bool:
    """An elementwise activation module: ``torch.nn``'s, or any class of ``transformers.activations`` (GELU in its
    exact, tanh, fast, quick and Python forms, SiLU, ...: some compute with ``tanh``, ``erf`` and products, which
    the identity rule replaces as a whole)."""
    return isinstance(module, _ACTIVATION_MODULES) or type(module).__module__ == "transformers.activations"


def _activation_forward(forward: Callable, inplace: bool, x: Any, *args: Any, **kwargs: Any) -> Any:
    """An activation module's forward under the identity rule (its own forward computes the values)."""
    if not (isinstance(x, Tensor) and x.requires_grad):
        return forward(x, *args, **kwargs)

    def fn(t: Tensor) -> Tensor:
        with torch._C.DisableTorchFunction():
            return forward(t.clone() if inplace else t, *args, **kwargs)

    with torch._C.DisableTorchFunction():  # the Function's own computations are not the model's
        return _Identity.apply(x, fn)


#: the ``transformers`` classifiers whose forwards are tested under the rules (tests/test_xai_transformer.py)
SUPPORTED_TRANSFORMERS = ("VideoMAEForVideoClassification", "TimesformerForVideoClassification",
                          "VivitForVideoClassification", "VJEPA2ForVideoClassification",
                          "VideoPrismForVideoClassification")
#: torchvision's attention video models (tests/test_xai_engine_torchvision.py)
SUPPORTED_TORCHVISION = ("MViT", "SwinTransformer3d")


def supports(module: nn.Module) -> bool:
    """Whether ``module`` is a classifier this engine explains through its own forward, as tested: one of the
    five ``transformers`` video classifiers (:data:`SUPPORTED_TRANSFORMERS`) or torchvision's MViT (``mvit_v1_b``,
    ``mvit_v2_s``) and Swin3D (``swin3d_t/s/b``). Build its stages with
    :func:`vidxai.models.hf_stages.model_stages` (``channels_first=True`` for torchvision, which takes
    ``(B, C, T, H, W)``). Other networks may work too (an uncovered function is one clear error)."""
    name = type(module).__name__
    if name in SUPPORTED_TRANSFORMERS:
        return type(module).__module__.startswith("transformers.")
    return name in SUPPORTED_TORCHVISION and type(module).__module__.startswith("torchvision.")


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict | None = None) -> list[Any]:
    out = list(args[: len(names)])
    for n in names[len(out):]:
        out.append(kwargs.get(n, (defaults or {}).get(n)))
    return out


def _tup(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _pad1(padding: Any) -> tuple:
    if isinstance(padding, str):
        raise ConfigError(f"conv1d with padding={padding!r} is not covered")
    return (0, _tup(padding, 1)[0])


def _named_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Parameters, buffers and plain tensor attributes of ``model``'s modules, by dotted name."""
    out = list(model.named_parameters()) + list(model.named_buffers())
    for mod_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                out.append((f"{mod_name}.{attr}".lstrip("."), value))
    return out


def _tensor_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for n, t in _named_tensors(model):
        names.setdefault(id(t), n)
    return names


def _configs(model: nn.Module) -> list[Any]:
    """The distinct ``transformers`` configs of ``model``'s modules (the attention implementation lives there)."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            seen.setdefault(id(config), config)
            for key in getattr(config, "sub_configs", {}) or {}:
                sub = getattr(config, key, None)
                if sub is not None and hasattr(sub, "_attn_implementation_internal"):
                    seen.setdefault(id(sub), sub)
    return list(seen.values())


# ----------------------------------------------------------------------------------------- attention
class _Active(threading.local):
    engine: RuleEngine | None = None


_ACTIVE = _Active()


def lrp_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  scaling: float | None = None, dropout: float = 0.0, softcap: float | None = None,
                  **kwargs: Any) -> tuple[Tensor, Tensor]:
    """``transformers``' attention interface, explicitly: ``softmax(softcap(q k^T * scaling) + mask) v`` in the
    input's dtype (no float32 softmax, no dropout: eval), so the rules of the active engine apply to each function.
    Returns ``(output (B, N, heads, d), probabilities)`` like ``eager_attention_forward``."""
    engine = _ACTIVE.engine
    if engine is not None and not engine.sees_all and softcap is None and (
            query.requires_grad or key.requires_grad or value.requires_grad):
        mask = None if attention_mask is None else attention_mask[:, :, :, : key.shape[-2]]
        out = engine.attention(query, key, value, mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: repeat the key / value heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), probs


_REGISTERED = False


def _register_attention() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, lrp_attention)
    _REGISTERED = True


class Recorder(RuleEngine):
    """A :class:`RuleEngine` whose rules are the plain functions (ordinary autograd): it only records the
    attention probabilities of the model's own forward (attention rollout, Chefer's relevancy)."""

    sees_all = True  # record also under no_grad

    def __init__(self, model: nn.Module, stop_weight: Tensor | None) -> None:
        super().__init__(model, None, "attnlrp", stop_weight=stop_weight)  # type: ignore[arg-type]

    def dispatch(self, name: str, func: Any, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        if name in _SOFTMAX:
            self.record.attentions.append(out)
        return out


# ----------------------------------------------------------------------------------------- the stage propagator
def _per_sample(r: Tensor, batch: int) -> Tensor:
    """A constant's relevance ``(B', ...)`` as ``(B, ...)``: split when ``B'`` is a multiple of the batch (a
    per-sample copy), else the batch total with a leading 1 (one clip: ``explain`` explains one at a time)."""
    if r.ndim and r.shape[0] % batch == 0 and r.shape[0] >= batch:
        return r.reshape(batch, -1, *r.shape[1:]).sum(1)
    return r.unsqueeze(0)


def _feature(r: Tensor, kind: str | None, batch: int) -> Tensor:
    """The relevance of the first layer's output summed per time step: ``(B, T', D)``."""
    if kind == "conv3d":  # (B, D, T', h, w)
        return r.flatten(3).sum(3).transpose(1, 2)
    if kind == "conv2d":  # (B * T, D, h, w)
        return r.flatten(2).sum(2).reshape(batch, -1, r.shape[1])
    return r.reshape(batch, -1, r.shape[-1])


@register_propagator("tokens")
class EnginePropagator:
    """A ``tokens`` stage (:class:`vidxai.models.hf_stages.ModelBody`): the model's own forward under the rules
    (:class:`RuleEngine`), then one backward pass; relevance = Gradient x Input.

    Reports ``feature``: the relevance of the first layer's output (the tubelet / patch embedding) summed over the
    patches of each time step, ``(B, T', D)``; and, as ``initial``, the share each constant absorbed (position
    tables, CLS token, ...; ``Explanation.initial_state`` keys ``<name>_l0``, e.g. ``position_embeddings_l0``).
    """

    uses_attention = True  # VideoLRP refuses attention_rule= on a network without such a stage

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        self.body = stage.module
        if not hasattr(self.body, "call") or not hasattr(self.body, "classifier"):
            raise TypeError(f"the tokens stage {stage.name!r} must be a vidxai.models.hf_stages.ModelBody")
        self.composite = context.composite
        self.rule = check_attention_rule(context.attention_rule or DEFAULT_ATTENTION_RULE)
        self.info = ModelInfo(self.body.model)  # the model's modules as they are now (explain it as it is)

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        engine = RuleEngine(self.body.model, self.composite, self.rule, self.composite.residual.stabilizer,
                            self.body.classifier.weight, self.info)
        leaf = x.detach().requires_grad_(True)
        out = self.body.pooled(engine.run(self.body.call(leaf)))
        if not out.requires_grad:
            raise ConfigError(f"VideoLRP cannot explain {type(self.body.model).__name__}: its classifier input does "
                              "not depend on the clip")
        return out.detach(), (leaf, out, engine.record)

    def relevance(self, ctx: Any, r_out: Tensor) -> StageRelevance:
        leaf, out, record = ctx
        names = list(record.constants)
        extra = [] if record.first_out is None else [record.first_out]
        grads = torch.autograd.grad(out, [leaf, *extra, *record.constants.values()], _safe_div(r_out, out),
                                    allow_unused=True)
        g_in, rest = grads[0], grads[1:]
        r_in = torch.zeros_like(leaf) if g_in is None else leaf.detach() * g_in
        batch = leaf.shape[0]
        feature = None
        if extra:
            g = rest[0]
            r_first = torch.zeros_like(extra[0]) if g is None else extra[0].detach() * g
            feature = _feature(r_first, record.first_kind, batch)
            rest = rest[1:]
        initial = {}
        for name, leaf_c, g in zip(names, record.constants.values(), rest):
            r = torch.zeros_like(leaf_c) if g is None else leaf_c.detach() * g
            initial[name] = [_per_sample(r, batch)]
        return StageRelevance(r_in, feature=feature, initial=initial)
