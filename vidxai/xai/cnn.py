"""The CNN part of the explainer: a list of layer steps that runs with LRP rules as autograd Functions.

:func:`compile_sequential` turns a (nested) ``nn.Sequential`` into steps once; :func:`run_steps` runs
them on a batch with a :class:`~vidxai.xai.rules.Composite`, so that ``torch.autograd.grad`` of the
output with the upper relevance as ``grad_outputs`` returns the input relevance. BatchNorm layers are
folded into the preceding conv / linear layer on the fly (new tensors; the module is never changed).
Modules are never called (no hooks fire, train/eval mode does not matter): the steps use the
functional ops with the modules' parameters, which is the eval-mode computation.

2D and 3D layers are handled alike (``Conv2d``/``Conv3d``, ``BatchNorm2d``/``BatchNorm3d``, max and
average pooling of either). torchvision's video residual blocks (``BasicBlock``, ``Bottleneck`` of
``torchvision.models.video.resnet``) compile to a ``"residual"`` step: the residual branch and the
shortcut (``downsample`` or the identity) as two step lists whose outputs ``a`` and ``b`` are added
with the composite's sum rule (``R(a + b)`` split in proportion to ``a`` and ``b``, stabiliser as
zennit's ``Norm``), then the block's final ReLU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidxai.xai.rules import Composite, LinearOp, LRPLinearFunction

__all__ = ["Step", "compile_sequential", "fold_batch_norm", "run_steps"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh)
_MAXPOOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_AVGPOOLS = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip
_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv2d, nn.Conv3d)

SUPPORTED = (
    "Conv2d/Conv3d (zero padding), Linear, BatchNorm after them, ReLU-like activations, max/avg pooling, "
    "Flatten, Dropout, Identity, torchvision video ResNet blocks (BasicBlock, Bottleneck)"
)


@dataclass
class Step:
    """One layer of a compiled sequence.

    ``kind`` is ``"linear"`` (``Conv2d`` / ``Conv3d`` / ``Linear``, with ``bn`` folded in),
    ``"activation"``, ``"maxpool"``, ``"avgpool"``, ``"flatten"`` or ``"residual"`` (``branch`` and
    ``shortcut`` step lists, added; an empty ``shortcut`` is the identity); ``is_first`` marks the first
    linear-type layer.
    """

    kind: str
    name: str
    module: nn.Module
    bn: nn.Module | None = None
    is_first: bool = False
    op: LinearOp | None = None
    branch: list[Step] | None = None
    shortcut: list[Step] | None = None

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


def _residual_parts(module: nn.Module) -> tuple[list[str], str] | None:
    """Branch attribute names and the final activation's of a supported residual block, else ``None``.

    Exact types only: a subclass may override ``forward``. Both compute
    ``act(branch(x) + (downsample(x) if downsample else x))``.
    """
    from torchvision.models.video.resnet import BasicBlock, Bottleneck

    if type(module) is BasicBlock:
        return ["conv1", "conv2"], "relu"
    if type(module) is Bottleneck:
        return ["conv1", "conv2", "conv3"], "relu"
    return None


class _Compiler:
    """Compiles modules to steps, tracking the first linear layer and whether the current tensor is >= 0."""

    def __init__(self) -> None:
        self.seen_linear = False
        self.nonnegative = False  # whether the current tensor is known to be >= 0 (after ReLU / sigmoid)

    def compile(self, module: nn.Module, prefix: str) -> list[Step]:
        steps: list[Step] = []
        for name, leaf in _leaves(module, prefix):
            self._leaf(steps, name, leaf)
        return steps

    def _leaf(self, steps: list[Step], name: str, leaf: nn.Module) -> None:
        if isinstance(leaf, (*_CONVS, nn.Linear)):
            if isinstance(leaf, _CONVS) and leaf.padding_mode != "zeros":
                raise ValueError(
                    f"VideoLRP cannot explain {name}: padding_mode={leaf.padding_mode!r}; only 'zeros'"
                )
            op = LinearOp.of(leaf, nonnegative_input=self.nonnegative)
            steps.append(Step("linear", name, leaf, is_first=not self.seen_linear, op=op))
            self.seen_linear, self.nonnegative = True, False
        elif isinstance(leaf, _BATCHNORMS):
            if not steps or steps[-1].kind != "linear" or steps[-1].bn is not None:
                raise ValueError(
                    f"VideoLRP cannot explain {name}: a BatchNorm must directly follow a Conv2d/Linear "
                    "(or Conv3d) to be folded"
                )
            if leaf.running_mean is None:
                raise ValueError(f"VideoLRP cannot explain {name}: BatchNorm without running statistics")
            steps[-1].bn = leaf
        elif isinstance(leaf, _ACTIVATIONS):
            if getattr(leaf, "inplace", False):  # would overwrite the saved output of the layer before
                leaf = copy.copy(leaf)
                leaf.inplace = False
            steps.append(Step("activation", name, leaf))
            self.nonnegative = isinstance(leaf, (nn.ReLU, nn.ReLU6, nn.Sigmoid))
        elif isinstance(leaf, _MAXPOOLS):
            if getattr(leaf, "return_indices", False):
                raise ValueError(f"VideoLRP cannot explain {name}: max pooling with return_indices=True")
            steps.append(Step("maxpool", name, leaf))
        elif isinstance(leaf, _AVGPOOLS):
            steps.append(Step("avgpool", name, leaf))
        elif isinstance(leaf, nn.Flatten):
            steps.append(Step("flatten", name, leaf))
        elif isinstance(leaf, _SKIPPED):
            return
        elif (parts := _residual_parts(leaf)) is not None:
            branch_names, act = parts
            block_input_nonnegative = self.nonnegative
            branch = [s for part in branch_names for s in self.compile(getattr(leaf, part), f"{name}.{part}")]
            self.nonnegative = block_input_nonnegative
            shortcut = [] if leaf.downsample is None else self.compile(leaf.downsample, f"{name}.downsample")
            steps.append(Step("residual", name, leaf, branch=branch, shortcut=shortcut))
            self.nonnegative = False
            self._leaf(steps, f"{name}.{act}", getattr(leaf, act))
        else:
            raise ValueError(
                f"VideoLRP cannot explain {name} ({type(leaf).__name__}); supported layers: {SUPPORTED}"
            )


def compile_sequential(module: nn.Module, prefix: str) -> list[Step]:
    """Compile ``module`` (a layer or nested ``nn.Sequential``) into steps; one clear error if unsupported."""
    return _Compiler().compile(module, prefix)


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
        elif step.kind == "residual":
            a = run_steps(step.branch or [], composite, x)
            b = run_steps(step.shortcut, composite, x) if step.shortcut else x
            x = composite.residual.add(a, b)
        else:  # flatten
            x = step.module.forward(x)
    return x
