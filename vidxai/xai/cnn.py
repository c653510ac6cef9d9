"""The CNN part of the explainer: a flat list of layer steps that runs with LRP rules as autograd Functions.

:func:`compile_sequential` turns a (nested) ``nn.Sequential`` into steps once; :func:`run_steps` runs
them on a batch with a :class:`~vidxai.xai.rules.Composite`, so that ``torch.autograd.grad`` of the
output with the upper relevance as ``grad_outputs`` returns the input relevance. BatchNorm layers are
folded into the preceding conv / linear layer on the fly (new tensors; the module is never changed).
Modules are never called (no hooks fire, train/eval mode does not matter): the steps use the
functional ops with the modules' parameters, which is the eval-mode computation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidxai.xai.rules import Composite, LinearOp, LRPLinearFunction

__all__ = ["Step", "compile_sequential", "fold_batch_norm", "run_steps"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh)
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)

SUPPORTED = (
    "Conv2d (zero padding), Linear, BatchNorm after them, ReLU-like activations, max/avg pooling, "
    "Flatten, Dropout, Identity"
)


@dataclass
class Step:
    """One layer of a compiled sequence.

    ``kind`` is ``"linear"`` (``Conv2d`` / ``Linear``, with ``bn`` folded in), ``"activation"``,
    ``"maxpool"``, ``"avgpool"`` or ``"flatten"``; ``is_first`` marks the first linear-type layer.
    """

    kind: str
    name: str
    module: nn.Module
    bn: nn.Module | None = None
    is_first: bool = False
    op: LinearOp | None = None

    def params(self) -> tuple[Tensor, Tensor | None]:
        """Current (detached) weight and bias of a linear step, with its BatchNorm folded in."""
        weight = self.module.weight.detach()
        bias = None if self.module.bias is None else self.module.bias.detach()
        if self.bn is None:
            return weight, bias
        return fold_batch_norm(weight, bias, self.bn)


def fold_batch_norm(weight: Tensor, bias: Tensor | None, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Weights of ``bn(layer(x))`` as one layer (eval-mode statistics), as zennit's ``MergeBatchNorm``."""
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.detach()
    beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach()
    scale = gamma / (var + bn.eps) ** 0.5
    if bias is None:
        bias = torch.zeros_like(mean)
    index = (slice(None), *((None,) * (weight.ndim - 1)))
    return weight * scale[index], (bias - mean) * scale + beta


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested ``nn.Sequential`` containers, in order, with dotted names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{name}")
        return out
    return [(prefix, module)]


def compile_sequential(module: nn.Module, prefix: str) -> list[Step]:
    """Compile ``module`` (a layer or nested ``nn.Sequential``) into steps; one clear error if unsupported."""
    steps: list[Step] = []
    seen_linear = False
    nonnegative = False  # whether the current tensor is known to be >= 0 (after ReLU / sigmoid)
    for name, leaf in _leaves(module, prefix):
        if isinstance(leaf, (nn.Conv2d, nn.Linear)):
            if isinstance(leaf, nn.Conv2d) and leaf.padding_mode != "zeros":
                raise ValueError(
                    f"VideoLRP cannot explain {name}: padding_mode={leaf.padding_mode!r}; only 'zeros'"
                )
            op = LinearOp.of(leaf, nonnegative_input=nonnegative)
            steps.append(Step("linear", name, leaf, is_first=not seen_linear, op=op))
            seen_linear, nonnegative = True, False
        elif isinstance(leaf, _BATCHNORMS):
            if not steps or steps[-1].kind != "linear" or steps[-1].bn is not None:
                raise ValueError(
                    f"VideoLRP cannot explain {name}: a BatchNorm must directly follow a Conv2d/Linear "
                    "to be folded"
                )
            if leaf.running_mean is None:
                raise ValueError(f"VideoLRP cannot explain {name}: BatchNorm without running statistics")
            steps[-1].bn = leaf
        elif isinstance(leaf, _ACTIVATIONS):
            if getattr(leaf, "inplace", False):  # would overwrite the saved output of the layer before
                leaf = copy.copy(leaf)
                leaf.inplace = False
            steps.append(Step("activation", name, leaf))
            nonnegative = isinstance(leaf, (nn.ReLU, nn.ReLU6, nn.Sigmoid))
        elif isinstance(leaf, _MAXPOOLS):
            if getattr(leaf, "return_indices", False):
                raise ValueError(f"VideoLRP cannot explain {name}: max pooling with return_indices=True")
            steps.append(Step("maxpool", name, leaf))
        elif isinstance(leaf, _AVGPOOLS):
            steps.append(Step("avgpool", name, leaf))
        elif isinstance(leaf, nn.Flatten):
            steps.append(Step("flatten", name, leaf))
        elif isinstance(leaf, _SKIPPED):
            continue
        else:
            raise ValueError(
                f"VideoLRP cannot explain {name} ({type(leaf).__name__}); supported layers: {SUPPORTED}"
            )
    return steps


def run_steps(steps: list[Step], composite: Composite, x: Tensor) -> Tensor:
    """Run ``steps`` on ``x`` with the rules of ``composite`` as backward (``x`` may or may not need grad)."""
    for step in steps:
        if step.kind == "linear":
            weight, bias = step.params()
            rule = composite.rule_for(step.module, step.is_first)
            x = LRPLinearFunction.apply(x, weight, bias, rule, step.op)
        elif step.kind == "activation":
            x = composite.activation.apply(x, step.module.forward)
        elif step.kind == "maxpool":
            x = composite.maxpool.apply(x, step.module.forward)
        elif step.kind == "avgpool":
            x = composite.avgpool.apply(x, step.module.forward)
        else:  # flatten
            x = step.module.forward(x)
    return x
