"""Stage propagators: how the explainer runs one stage forward and maps its relevance back, by stage kind.

:class:`~vidxai.xai.VideoLRP` is a generic loop over the network's stages
(:func:`vidxai.models.contract.explain_stages`): forward through every stage's propagator, then relevance
back through them in reverse order. A propagator is built once per stage by the factory registered for
the stage's kind with :func:`register_propagator` (``factory(stage, context) -> propagator``) and has

* ``forward(x) -> (out, ctx)``: the stage's output (detached: every stage keeps its own graph) and what
  its relevance pass needs;
* ``relevance(ctx, r_out) -> r_in``: the relevance of the stage's input from that of its output, as a
  tensor, or a :class:`StageRelevance` that also reports the stage's own ``feature`` relevance or the
  relevance of initial states.

Built in: ``frames`` (a per-frame CNN, time folded into the batch, optionally in chunks), ``recurrent``
(LSTM / ConvLSTM after Arras et al., :mod:`vidxai.xai.recurrent`), ``clip`` (a CNN over the whole clip,
3D convolutions) and ``head``. CNN-like stages compile their module through the layer registry
(:mod:`vidxai.xai.cnn`) and run the chosen composite's rules as modified gradients. The head follows the
chosen rule, except after a recurrent stage: there it is the output layer of the Arras LSTM model and uses
the epsilon rule with ``lstm_eps`` and ``bias_factor`` like the recurrent part (so ``bias_factor=1``
conserves the whole recurrent model, as the reference ``lrp_linear`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage
from vidxai.xai.cnn import Step, compile_sequential, run_steps
from vidxai.xai.recurrent import arras_composite, convlstm_layers, lstm_layers, recurrent_forward, recurrent_relevance
from vidxai.xai.rules import Composite

__all__ = [
    "PropagatorContext",
    "StagePropagator",
    "StageRelevance",
    "build_propagator",
    "register_propagator",
    "registered_propagators",
]


@dataclass(frozen=True)
class PropagatorContext:
    """The explainer's settings a propagator may use.

    Attributes:
        composite: the chosen rule's composite (which rule each layer type gets).
        lstm_rule, lstm_eps, bias_factor: the recurrent part's settings (:class:`~vidxai.xai.VideoLRP`).
        chunk_frames: at most this many frames at a time through a per-frame CNN (``None``: all).
        network: the network's class name (for messages).
        first: whether this stage is the network's first (its first conv / linear layer is the composite's
            "first layer").
        previous: the kind of the stage before this one (``None`` for the first).
        attention_rule: the attention rule of a transformer stage (``attnlrp`` / ``cp``; ``None``: its default).
    """

    composite: Composite
    lstm_rule: str = "signal_take_all"
    lstm_eps: float = 1e-3
    bias_factor: float = 0.0
    chunk_frames: int | None = None
    network: str = "network"
    first: bool = True
    previous: str | None = None
    attention_rule: str | None = None


@dataclass
class StageRelevance:
    """What a stage's relevance pass returns beyond the input relevance (all optional).

    Attributes:
        input: relevance of the stage's input.
        feature: the stage's own feature relevance ``(B, T', C, ...)`` for ``Explanation.feature`` (a clip
            CNN's last feature map); by default ``Explanation.feature`` is the relevance at the first
            stage's output.
        initial: relevance of initial states by name, one tensor per layer (``{"h0": [...], "c0": [...]}``).
    """

    input: Tensor
    feature: Tensor | None = None
    initial: dict[str, list[Tensor]] = field(default_factory=dict)


class StagePropagator(Protocol):
    """One stage of the explainer: a forward that keeps what the relevance needs, and the relevance map."""

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        """The stage's output for ``x`` (detached) and its context for :meth:`relevance`."""
        ...

    def relevance(self, ctx: Any, r_out: Tensor) -> Tensor | StageRelevance:
        """The relevance of the stage's input from that of its output."""
        ...


Factory = Callable[[Stage, PropagatorContext], StagePropagator]
_PROPAGATORS: dict[str, Factory] = {}


def register_propagator(kind: str) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(stage, context) -> propagator`` (a class works) explains stages of ``kind``."""

    def decorate(factory: Factory) -> Factory:
        _PROPAGATORS[kind] = factory
        return factory

    return decorate


def registered_propagators() -> tuple[str, ...]:
    """The stage kinds with a propagator."""
    return tuple(_PROPAGATORS)


def build_propagator(stage: Stage, context: PropagatorContext) -> StagePropagator:
    """The propagator of ``stage``; one clear error if its kind has none."""
    factory = _PROPAGATORS.get(stage.kind)
    if factory is None:
        raise ConfigError(
            f"VideoLRP cannot explain stage {stage.name!r} of {context.network}: no propagator for stage kind "
            f"{stage.kind!r}; register one with vidxai.xai.register_propagator (docs/architecture.md)"
        )
    return factory(stage, context)


def _grad(out: Tensor, leaf: Tensor, r_out: Tensor) -> Tensor:
    (r,) = torch.autograd.grad(out, leaf, r_out)
    return r


# ------------------------------------------------------------------------------------------- frames
@register_propagator("frames")
class FramesPropagator:
    """A per-frame CNN: ``(B, T, C, H, W)`` -> ``(B, T, *F)`` with time folded into the batch."""

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        self.steps: list[Step] = compile_sequential(stage.module, stage.name, context.first)
        self.composite = context.composite
        self.chunk_frames = context.chunk_frames

    def _encode(self, frames: Tensor) -> Tensor:
        return run_steps(self.steps, self.composite, frames)

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:])
        n = frames.shape[0]
        chunk = n if self.chunk_frames is None else min(self.chunk_frames, n)
        graph = None
        if not self.steps:
            feats = frames
        elif chunk >= n:  # one pass: keep the graph for the relevance
            leaf = frames.detach().requires_grad_(True)
            graph = (leaf, self._encode(leaf))
            feats = graph[1].detach()
        else:  # first pass without graph, chunk by chunk; the relevance pass recomputes per chunk
            with torch.no_grad():
                feats = torch.cat([self._encode(frames[k : k + chunk]) for k in range(0, n, chunk)])
        return feats.reshape(b, t, *feats.shape[1:]), (frames, graph, chunk)

    def relevance(self, ctx: Any, r_out: Tensor) -> Tensor:
        frames, graph, chunk = ctx
        r_feats = r_out.reshape(frames.shape[0], *r_out.shape[2:])
        if not self.steps:
            r_frames = r_feats
        elif graph is not None:
            r_frames = _grad(graph[1], graph[0], r_feats)
        else:
            parts = []
            for k in range(0, frames.shape[0], chunk):
                leaf = frames[k : k + chunk].detach().requires_grad_(True)
                parts.append(_grad(self._encode(leaf), leaf, r_feats[k : k + chunk]))
            r_frames = torch.cat(parts)
        return r_frames.reshape(*r_out.shape[:2], *frames.shape[1:])


# ------------------------------------------------------------------------------------------- clip
def _split_global_pool(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """Split a clip CNN's steps into the body and its trailing pooling / flatten steps."""
    k = len(steps)
    while k > 0 and steps[k - 1].kind in ("avgpool", "maxpool", "flatten"):
        k -= 1
    return steps[:k], steps[k:]


@register_propagator("clip")
class ClipPropagator:
    """A CNN over the whole clip: ``(B, T, C, H, W)`` -> ``(B, C, T, H, W)`` -> ``(B, *F)``.

    Reports ``feature``: the relevance of its last feature map (the input of the trailing global pooling)
    as ``(B, T', C, ...)``.
    """

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        if context.chunk_frames is not None:
            raise ConfigError(
                f"chunk_frames={context.chunk_frames} does not apply to {context.network}: its clip stage "
                f"{stage.name!r} mixes frames in 3D convolutions; set chunk_frames=null"
            )
        self.body, self.pool = _split_global_pool(compile_sequential(stage.module, stage.name, context.first))
        self.composite = context.composite

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        leaf = x.transpose(1, 2).detach().requires_grad_(True)
        fmap = run_steps(self.body, self.composite, leaf)
        out = run_steps(self.pool, self.composite, fmap) if self.pool else fmap
        return out.detach(), (leaf, fmap, out)

    def relevance(self, ctx: Any, r_out: Tensor) -> StageRelevance:
        leaf, fmap, out = ctx
        if fmap is out or fmap is leaf:
            r_leaf, r_fmap = _grad(out, leaf, r_out), r_out
        else:
            r_leaf, r_fmap = torch.autograd.grad(out, [leaf, fmap], r_out)
        # feature: per time step of the last feature map (B, C, T', ...) -> (B, T', C, ...)
        feature = r_fmap.transpose(1, 2) if r_fmap.ndim >= 3 else r_fmap[:, None]
        return StageRelevance(r_leaf.transpose(1, 2), feature=feature)


# ------------------------------------------------------------------------------------------- recurrent
@register_propagator("recurrent")
class RecurrentPropagator:
    """``nn.LSTM`` or stacked ConvLSTM cells: ``(B, T, *F)`` -> the last hidden state ``(B, *H)``.

    Reports the relevance of the zero initial states per layer (``h0``, ``c0``).
    """

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        self.module = stage.module
        self.context = context
        self._layers()  # an unsupported recurrent module fails here, not at the first explanation

    def _layers(self) -> list:
        if isinstance(self.module, nn.LSTM):
            return lstm_layers(self.module)
        if isinstance(self.module, nn.ModuleList):
            return convlstm_layers(self.module)
        raise ConfigError(
            f"VideoLRP cannot explain the recurrent stage of {self.context.network}: expected nn.LSTM or an "
            f"nn.ModuleList of ConvLSTM cells, got {type(self.module).__name__}"
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        layers = self._layers()  # the current weights (a randomisation test changes them in place)
        hidden, traces = recurrent_forward(layers, x)
        return hidden[:, -1], (layers, traces, hidden)

    def relevance(self, ctx: Any, r_out: Tensor) -> StageRelevance:
        layers, traces, hidden = ctx
        c = self.context
        r_hidden = torch.zeros_like(hidden)
        r_hidden[:, -1] = r_out
        r_in, r_h0, r_c0 = recurrent_relevance(layers, traces, r_hidden, c.lstm_eps, c.bias_factor, c.lstm_rule)
        return StageRelevance(r_in, initial={"h0": r_h0, "c0": r_c0})


# ------------------------------------------------------------------------------------------- head
@register_propagator("head")
class HeadPropagator:
    """The classifier head: ``(B, *F)`` -> logits ``(B, classes)``, with the chosen rule's composite.

    After a recurrent stage the head is the Arras model's output layer: epsilon with ``lstm_eps`` and
    ``bias_factor`` (:func:`vidxai.xai.recurrent.arras_composite`).
    """

    def __init__(self, stage: Stage, context: PropagatorContext) -> None:
        self.steps = compile_sequential(stage.module, stage.name, context.first)
        bad = [s.name for s in self.steps if s.kind == "residual"]
        if bad:
            raise ConfigError(
                f"VideoLRP cannot explain {bad[0]}: residual blocks belong in the clip stage, not the head"
            )
        if context.previous == "recurrent":
            self.composite = arras_composite(context.lstm_eps, context.bias_factor)
        else:
            self.composite = context.composite

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        leaf = x.detach().requires_grad_(True)
        out = run_steps(self.steps, self.composite, leaf)
        if out.ndim != 2:
            raise ValueError(f"the head must produce logits (B, C), got shape {tuple(out.shape)}")
        return out.detach(), (leaf, out)

    def relevance(self, ctx: Any, r_out: Tensor) -> Tensor:
        leaf, out = ctx
        if out is leaf or not out.requires_grad:  # an empty head
            return r_out
        return _grad(out, leaf, r_out)
