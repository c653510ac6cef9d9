"""The one contract between video networks and everything that looks inside them (LRP, evaluation).

A network is *explainable* when it implements :class:`ExplainableVideoNet`: ``explain_stages()``
returns its computation as an ordered tuple of :class:`Stage` objects, input first, logits last.
Composing the stages with :func:`run_stages` must give exactly ``net(x)`` (eval mode); the explainer
(:class:`vidxai.xai.VideoLRP`), the randomisation test of the evaluation and anything else that needs
the structure depend on these stages only, never on attribute names.

Stage kinds and the tensors they map (clips enter as ``(B, T, C, H, W)``):

``"frames"``
    A per-frame CNN (``nn.Sequential`` of layers the explainer supports, or ``nn.Identity``), run with
    time folded into the batch: ``(B*T, C, H, W) -> (B*T, *F)``; the output is reshaped to
    ``(B, T, *F)``.
``"recurrent"``
    ``nn.LSTM`` (``batch_first=True``) or an ``nn.ModuleList`` of
    :class:`~vidxai.models.convlstm.ConvLSTMCell`: ``(B, T, *F) -> (B, *H)``, the last layer's final
    hidden state (zero initial states).
``"clip"``
    A network over the whole clip in the channels-first video layout: the input ``(B, T, C, H, W)``
    is permuted to ``(B, C, T, H, W)``; the module (an ``nn.Sequential`` of supported layers and
    residual blocks) maps it to ``(B, *F)``.
``"head"``
    ``nn.Sequential`` on the previous stage's output: ``(B, *F) -> (B, num_classes)`` logits.

Stage kinds are a registry (:func:`register_stage_kind`): each kind names its reference forward ``run(module,
x) -> y`` (what :func:`run_stages` composes), the kinds that may directly precede it, whether it may come first
and whether it ends the network. The built-in kinds give the valid sequences ``[frames] [recurrent] head``
(at least one of the first two) or ``clip head``; a new kind (e.g. a transformer's tokens) is one
registration, and the explainer handles it with a propagator registered for the same kind
(:func:`vidxai.xai.propagators.register_propagator`).
A stage's module may be a container built on the fly from the network's own modules (its parameters
and buffers are the network's, never copies). Adding an architecture means writing its
``explain_stages`` (one model file) and a registry entry; ``vidxai/xai`` changes only for a new layer
type (one handler: :func:`vidxai.xai.cnn.register_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "STAGE_KINDS",
    "ExplainableVideoNet",
    "Stage",
    "StageKind",
    "explain_stages",
    "register_stage_kind",
    "run_cells",
    "run_stages",
    "stage_kind",
]


@dataclass(frozen=True)
class StageKind:
    """A registered stage kind: its reference forward and where it may stand in a network's stages.

    Attributes:
        name: the kind's name (``Stage.kind``).
        run: ``run(module, x) -> y``, the forward of a stage of this kind on the previous stage's output
            (clips ``(B, T, C, H, W)`` for a first stage).
        after: the kinds that may directly precede it.
        before: the kinds it may directly precede (so a new kind can stand before a built-in one, e.g.
            ``before=("head",)``, without re-registering that one).
        first: whether it may be the first stage.
        terminal: whether it is the last stage (produces the logits); exactly one terminal stage, at the end.
    """

    name: str
    run: Callable[[nn.Module, Tensor], Tensor]
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    first: bool = False
    terminal: bool = False


_KINDS: dict[str, StageKind] = {}
#: The registered stage kinds by name (a read-only view of the registry).
STAGE_KINDS: Mapping[str, StageKind] = MappingProxyType(_KINDS)


def register_stage_kind(
    name: str,
    run: Callable[[nn.Module, Tensor], Tensor],
    *,
    after: Sequence[str] = (),
    before: Sequence[str] = (),
    first: bool = False,
    terminal: bool = False,
) -> StageKind:
    """Register (or replace) the stage kind ``name``; see :class:`StageKind` for the arguments."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a stage kind needs a non-empty name, got {name!r}")
    if not callable(run):
        raise ValueError(f"stage kind {name!r}: run must be callable run(module, x) -> y, got {run!r}")
    kind = StageKind(name, run, tuple(after), tuple(before), bool(first), bool(terminal))
    _KINDS[name] = kind
    return kind


def stage_kind(name: str) -> StageKind:
    """The registered stage kind ``name``; a ``TypeError`` naming the registered kinds otherwise."""
    if name not in _KINDS:
        raise TypeError(f"unknown stage kind {name!r}; registered kinds: {sorted(_KINDS)} (see register_stage_kind)")
    return _KINDS[name]


@dataclass(frozen=True)
class Stage:
    """One explainable stage of a video network.

    Attributes:
        name: the attribute path of ``module`` in the network (``"encoder"``, ``"lstm"``, ...), or a name
            for a container the network builds from its own modules (R2Plus1D's ``"backbone"``); used in
            messages and as a prefix of layer names.
        kind: a registered stage kind (:data:`STAGE_KINDS`): ``"frames"``, ``"recurrent"``, ``"clip"``,
            ``"head"`` or one registered with :func:`register_stage_kind`.
        module: the stage's module: one of the network's submodules, or a new ``nn.Sequential`` of them
            (so a network keeps its own attribute names and state-dict keys, e.g. torchvision's). Either
            way its parameters and buffers are the network's own tensors, never copies: changing the
            stage's weights changes the network's.
    """

    name: str
    kind: str
    module: nn.Module


@runtime_checkable
class ExplainableVideoNet(Protocol):
    """A video network whose computation is an explicit sequence of stages."""

    def explain_stages(self) -> tuple[Stage, ...]:
        """The stages of ``forward``, input first, head last."""
        ...


def _order_error(kinds: Sequence[str]) -> str | None:
    """Why the sequence of stage kinds is invalid under the registry, or ``None`` if it is valid."""
    if not kinds:
        return "no stages"
    if not _KINDS[kinds[0]].first:
        return f"{kinds[0]!r} cannot be the first stage"
    for prev, cur in zip(kinds, kinds[1:]):
        if prev not in _KINDS[cur].after and cur not in _KINDS[prev].before:
            return f"{cur!r} cannot follow {prev!r}"
    if not _KINDS[kinds[-1]].terminal or any(_KINDS[k].terminal for k in kinds[:-1]):
        return "exactly one terminal stage (the head) must come last"
    return None


def _valid_orders() -> str:
    starts = [k for k, v in _KINDS.items() if v.first]
    pairs = [f"{a} -> {k}" for k, v in _KINDS.items() for a in v.after]
    pairs += [f"{k} -> {b}" for k, v in _KINDS.items() for b in v.before]
    return f"first: {starts}; then {', '.join(pairs)}; one terminal stage last"


def _network_of(net: nn.Module) -> nn.Module:
    inner = getattr(net, "net", None)
    if isinstance(inner, nn.Module) and not isinstance(net, ExplainableVideoNet):
        return inner
    return net


def explain_stages(net: nn.Module) -> tuple[Stage, ...]:
    """The validated stages of ``net`` (a network, or a LightningModule whose ``.net`` is one).

    Raises:
        TypeError: ``net`` does not implement :class:`ExplainableVideoNet`, or its stages are malformed
            (unregistered kinds, an order the registry does not allow, or a stage holds parameters /
            buffers that are not the network's); the message names the network and what is wrong.
    """
    net = _network_of(net)
    kind = type(net).__name__
    if not isinstance(net, ExplainableVideoNet):
        raise TypeError(
            f"cannot explain {kind}: it does not implement explain_stages() "
            "(see vidxai.models.contract and docs/architecture.md, 'Adding an architecture')"
        )
    stages = tuple(net.explain_stages())
    for stage in stages:
        if not isinstance(stage, Stage) or stage.kind not in _KINDS or not isinstance(stage.module, nn.Module):
            raise TypeError(
                f"{kind}.explain_stages() returned {stage!r}; expected Stage(name, kind, module) with a "
                f"registered kind ({sorted(_KINDS)})"
            )
    owned = {id(t) for t in (*net.parameters(), *net.buffers())}
    for stage in stages:
        tensors = (*stage.module.named_parameters(), *stage.module.named_buffers())
        foreign = [n for n, t in tensors if id(t) not in owned]
        if foreign:
            raise TypeError(
                f"{kind}.explain_stages(): stage {stage.name!r} has tensors that are not the network's own "
                f"({foreign[0]!r}); build stages from the network's modules, never from copies"
            )
    kinds = [s.kind for s in stages]
    problem = _order_error(kinds)
    if problem is not None:
        raise TypeError(f"{kind}.explain_stages() has kinds {kinds} ({problem}); valid are {_valid_orders()}")
    return stages


def run_cells(cells: nn.ModuleList, seq: Tensor) -> Tensor:
    """Stacked ConvLSTM cells over time from zero states: ``(B, T, C, H, W)`` -> the last cell's hidden sequence."""
    for cell in cells:
        state = None
        outputs = []
        for t in range(seq.shape[1]):
            state = cell(seq[:, t], state)
            outputs.append(state[0])
        seq = torch.stack(outputs, dim=1)
    return seq


def run_stages(stages: Sequence[Stage], x: Tensor) -> Tensor:
    """Compose ``stages`` on clips ``x (B, T, C, H, W)``: the network's forward, as the contract states it."""
    for stage in stages:
        x = stage_kind(stage.kind).run(stage.module, x)
    return x


# ------------------------------------------------------------------------ the built-in kinds
def _run_frames(module: nn.Module, x: Tensor) -> Tensor:
    b, t = x.shape[:2]
    y = module(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


def _run_recurrent(module: nn.Module, seq: Tensor) -> Tensor:
    if isinstance(module, nn.LSTM):
        out, _ = module(seq)
        return out[:, -1]
    if isinstance(module, nn.ModuleList):
        return run_cells(module, seq)[:, -1]
    raise TypeError(f"a recurrent stage must be nn.LSTM or an nn.ModuleList of ConvLSTM cells, got {module}")


def _run_clip(module: nn.Module, x: Tensor) -> Tensor:
    return module(x.transpose(1, 2))


def _run_head(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


register_stage_kind("frames", _run_frames, first=True)
register_stage_kind("recurrent", _run_recurrent, after=("frames",), first=True)
register_stage_kind("clip", _run_clip, first=True)
register_stage_kind("head", _run_head, after=("frames", "recurrent", "clip"), terminal=True)
