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

Valid sequences: ``[frames] [recurrent] head`` (at least one of the first two) or ``clip head``.
A stage's module may be a container built on the fly from the network's own modules (its parameters
and buffers are the network's, never copies). Adding an architecture means writing its
``explain_stages`` (one model file) and a registry entry; ``vidxai/xai`` changes only for a new layer
type (the layers the explainer supports: ``vidxai.xai.cnn.SUPPORTED``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["STAGE_KINDS", "ExplainableVideoNet", "Stage", "explain_stages", "run_cells", "run_stages"]

StageKind = Literal["frames", "recurrent", "clip", "head"]
#: The stage kinds, in the order they may appear.
STAGE_KINDS: tuple[str, ...] = ("frames", "recurrent", "clip", "head")


@dataclass(frozen=True)
class Stage:
    """One explainable stage of a video network.

    Attributes:
        name: the attribute path of ``module`` in the network (``"encoder"``, ``"lstm"``, ...), or a name
            for a container the network builds from its own modules (R2Plus1D's ``"backbone"``); used in
            messages and as a prefix of layer names.
        kind: ``"frames"``, ``"recurrent"``, ``"clip"`` or ``"head"`` (see the module docstring).
        module: the stage's module: one of the network's submodules, or a new ``nn.Sequential`` of them
            (so a network keeps its own attribute names and state-dict keys, e.g. torchvision's). Either
            way its parameters and buffers are the network's own tensors, never copies: changing the
            stage's weights changes the network's.
    """

    name: str
    kind: StageKind
    module: nn.Module


@runtime_checkable
class ExplainableVideoNet(Protocol):
    """A video network whose computation is an explicit sequence of stages."""

    def explain_stages(self) -> tuple[Stage, ...]:
        """The stages of ``forward``, input first, head last."""
        ...


def _valid_order(kinds: Sequence[str]) -> bool:
    if not kinds or kinds[-1] != "head" or kinds.count("head") != 1:
        return False
    body = list(kinds[:-1])
    return body in (["frames"], ["recurrent"], ["frames", "recurrent"], ["clip"])


def explain_stages(net: nn.Module) -> tuple[Stage, ...]:
    """The validated stages of ``net`` (a network, or a LightningModule whose ``.net`` is one).

    Raises:
        TypeError: ``net`` does not implement :class:`ExplainableVideoNet`, or its stages are malformed
            (wrong kinds or order, or a stage holds parameters / buffers that are not the network's);
            the message names the network and what is wrong.
    """
    inner = getattr(net, "net", None)
    if isinstance(inner, nn.Module) and not isinstance(net, ExplainableVideoNet):
        net = inner
    kind = type(net).__name__
    if not isinstance(net, ExplainableVideoNet):
        raise TypeError(
            f"cannot explain {kind}: it does not implement explain_stages() "
            "(see vidxai.models.contract and docs/architecture.md, 'Adding an architecture')"
        )
    stages = tuple(net.explain_stages())
    for stage in stages:
        if not isinstance(stage, Stage) or stage.kind not in STAGE_KINDS or not isinstance(stage.module, nn.Module):
            raise TypeError(f"{kind}.explain_stages() returned {stage!r}; expected Stage(name, kind, module)")
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
    if not _valid_order(kinds):
        raise TypeError(
            f"{kind}.explain_stages() has kinds {kinds}; valid are [frames] [recurrent] head or clip head"
        )
    return stages


def _recurrent(module: nn.Module, seq: Tensor) -> Tensor:
    if isinstance(module, nn.LSTM):
        out, _ = module(seq)
        return out[:, -1]
    if isinstance(module, nn.ModuleList):
        return run_cells(module, seq)[:, -1]
    raise TypeError(f"a recurrent stage must be nn.LSTM or an nn.ModuleList of ConvLSTM cells, got {module}")


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
    b, t = x.shape[:2]
    for stage in stages:
        if stage.kind == "frames":
            y = stage.module(x.reshape(b * t, *x.shape[2:]))
            x = y.reshape(b, t, *y.shape[1:])
        elif stage.kind == "recurrent":
            x = _recurrent(stage.module, x)
        elif stage.kind == "clip":
            x = stage.module(x.transpose(1, 2))
        else:
            x = stage.module(x)
    return x
