"""Cascading model-parameter randomisation (Adebayo et al. 2018) over a network's explainer stages.

The cascade follows :func:`vidxai.models.contract.explain_stages`, from the output down, stage by stage:
the head (the terminal stage) whole, a stage the explainer's layer registry cannot compile (the
recurrent stage) whole, and every other stage (frames, clip) in blocks or layers as the layer registry
compiles it (:mod:`vidxai.xai.cnn`; no type lists here). With ``granularity="block"`` (default) a block is
a run of the stage's plain layers ending at a pooling layer (VGG16's five blocks, a ConvLSTM's stem) or
one nested container (a residual block or layer of a 3D CNN); with ``granularity="layer"`` every
conv / linear layer is its own step, with the BatchNorm folded into it.
Each step re-initialises its modules (their own ``reset_parameters``, seeded) on top of the previous
steps, on a deep copy: the original network is never touched. An explanation that passes the test
changes as more of the model is randomised; the score is the Spearman rank correlation of ``|map|``
with the original ``|map|`` after each step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vidxai.errors import ConfigError
from vidxai.models.contract import explain_stages, stage_kind
from vidxai.xai.cnn import LinearStep, Step, compile_sequential, flat_steps

__all__ = ["CascadeStep", "cascade_steps", "randomised_cascade", "spearman"]

GRANULARITIES = ("block", "layer")


@dataclass(frozen=True)
class CascadeStep:
    """One step of the cascade: a name (``head``, the recurrent stage's name, ``encoder.28``...) and modules."""

    name: str
    modules: tuple[nn.Module, ...]


def _network(net: nn.Module) -> nn.Module:
    inner = getattr(net, "net", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "explain_stages") else net


def _compiled(stage_name: str, module: nn.Module) -> list[Step] | None:
    """The stage as the explainer's layer registry compiles it, or ``None`` if it cannot (an LSTM)."""
    try:
        return compile_sequential(module, stage_name)
    except ConfigError:
        return None


def _child(stage_name: str, step_name: str) -> str:
    """The name of the stage module's direct child that a step belongs to (``""``: the module itself)."""
    return step_name[len(stage_name) + 1 :].split(".")[0]


def _layers(steps: list[Step]) -> list[tuple[str, list[nn.Module]]]:
    """Every conv / linear layer (nested ones included) with the BatchNorm folded into it."""
    layers = [s for s in flat_steps(steps) if isinstance(s, LinearStep)]
    return [(s.name, [s.module] + ([s.bn] if s.bn is not None else [])) for s in layers]


def _blocks(stage_name: str, module: nn.Module, steps: list[Step]) -> list[tuple[str, list[nn.Module]]]:
    children = list(module.named_children()) or [("", module)]
    own: dict[str, list[Step]] = {}
    for step in steps:
        own.setdefault(_child(stage_name, step.name), []).append(step)
    weighted = {_child(stage_name, s.name) for s in flat_steps(steps) if isinstance(s, LinearStep)}
    units: list[tuple[str, list[nn.Module]]] = []
    run: list[tuple[str, nn.Module]] = []

    def close() -> None:
        if run and any(name in weighted for name, _ in run):
            first, last = run[0][0], run[-1][0]
            label = f"{stage_name}.{first}" if first == last else f"{stage_name}.{first}-{last}"
            units.append((label.rstrip("."), [m for _, m in run]))
        run.clear()

    for name, child in children:
        mine = own.get(name, [])
        if mine and all(s.kind in ("maxpool", "avgpool") for s in mine):  # a pooling layer ends a block
            run.append((name, child))
            close()
        elif next(child.children(), None) is None:  # a plain layer
            run.append((name, child))
        else:  # a container (residual block, nested stage): a block of its own
            close()
            run.append((name, child))
            close()
    close()
    return units


def cascade_steps(net: nn.Module, granularity: str = "block") -> list[CascadeStep]:
    """The cascade of ``net``, output first (see the module docstring)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown mprt granularity {granularity!r}; choose one of {list(GRANULARITIES)}")
    steps: list[CascadeStep] = []
    for stage in reversed(explain_stages(net)):
        compiled = None if stage_kind(stage.kind).terminal else _compiled(stage.name, stage.module)
        if compiled is None:  # the head, or a stage the layer registry does not split (LSTM): whole
            steps.append(CascadeStep(stage.name, (stage.module,)))
            continue
        units = _blocks(stage.name, stage.module, compiled) if granularity == "block" else _layers(compiled)
        steps += [CascadeStep(name, tuple(mods)) for name, mods in reversed(units)]
    return steps


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        reset_stats = getattr(m, "reset_running_stats", None)  # normalisation layers
        if callable(reset_stats):
            reset_stats()


def randomised_cascade(
    net: nn.Module, seed: int = 0, max_steps: int | None = None, granularity: str = "block"
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(step name, network)`` with the cascade randomised up to and including that step.

    One deep copy of the network (in eval mode) is randomised progressively; ``net`` is left unchanged.
    ``max_steps`` stops after that many steps (``None``: the whole cascade); ``granularity``: see above.
    """
    model = copy.deepcopy(_network(net)).eval()
    steps = cascade_steps(model, granularity)
    if max_steps is not None:
        steps = steps[: int(max_steps)]
    devices = [p.device for p in model.parameters() if p.is_cuda][:1]
    for k, step in enumerate(steps):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) * 1000 + k)
            for module in step.modules:
                _reinitialise(module)
        yield step.name, model


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse.reshape(-1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of the same size (NaN if either is constant)."""
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs arrays of one size, got {x.size} and {y.size}")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")
