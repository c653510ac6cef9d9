"""The layer registry of the explainer: layer type -> handler compiling it into steps that run with LRP rules.

:func:`compile_sequential` turns a module (a layer, or nested ``nn.Sequential`` containers) into a list
of :class:`Step` objects once; :func:`run_steps` runs them on a batch with a
:class:`~vidxai.xai.rules.Composite`, so that ``torch.autograd.grad`` of the output with the upper
relevance as ``grad_outputs`` returns the input relevance. Each step runs itself (:meth:`Step.run`) with
relevance-propagating autograd Functions; modules are never called (no hooks fire, train/eval mode does
not matter): the steps use the functional ops with the modules' parameters, the eval-mode computation.

Which handler compiles a module is looked up by its type along the MRO in the registry that
:func:`register_layer` fills (``exact=True`` entries match the type itself only: a subclass may override
``forward``). A handler is ``handler(compiler, name, module)`` and appends steps with
:meth:`Compiler.add` (or changes the last one: BatchNorm is folded into the conv / linear layer before
it, as new tensors; the module is never changed). Built in: ``Conv2d``/``Conv3d`` (zero padding),
``Linear``, BatchNorm after them, ReLU-like activations, max and average pooling (1D/2D/3D, adaptive),
``Flatten``, dropout, ``Identity``, nested ``nn.Sequential`` and torchvision's video residual blocks
(``BasicBlock``, ``Bottleneck``): the residual branch and the shortcut (``downsample`` or the identity)
as two step lists whose outputs ``a`` and ``b`` are added with the composite's sum rule (``R(a + b)``
split in proportion to ``a`` and ``b``, stabiliser as zennit's ``Norm``), then the block's final ReLU;
S3D's inception block (``SepInceptionBlock3D``): its four branches on the same input, outputs concatenated
(each branch gets the relevance of its own channels).
A new layer type is one handler (docs/architecture.md, "Adding a layer type").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models.layers import ClipMean
from vidxai.xai.rules import Composite, LinearOp, LRPLinearFunction

__all__ = [
    "ActivationStep",
    "AvgPoolStep",
    "Compiler",
    "ConcatStep",
    "FlattenStep",
    "LinearStep",
    "MaxPoolStep",
    "ResidualStep",
    "Step",
    "compile_sequential",
    "flat_steps",
    "fold_batch_norm",
    "layer_handler",
    "register_layer",
    "registered_layers",
    "run_steps",
    "weighted_layers",
]

Handler = Callable[["Compiler", str, nn.Module], None]
_LAYERS: dict[type, tuple[Handler, bool]] = {}


def register_layer(*module_types: type, exact: bool = False) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(compiler, name, module)`` compiles modules of ``module_types`` into steps.

    Lookup follows the module's MRO, so a handler covers subclasses unless ``exact=True``. Registering a
    type again replaces its handler.
    """
    if not module_types or not all(isinstance(t, type) for t in module_types):
        raise TypeError(f"register_layer takes module types, got {module_types!r}")

    def decorate(handler: Handler) -> Handler:
        for module_type in module_types:
            _LAYERS[module_type] = (handler, exact)
        return handler

    return decorate


def layer_handler(module: nn.Module) -> Handler | None:
    """The registered handler of ``module``'s type (nearest along the MRO), or ``None``."""
    for cls in type(module).__mro__:
        entry = _LAYERS.get(cls)
        if entry is not None and (not entry[1] or cls is type(module)):
            return entry[0]
    return None


def registered_layers() -> tuple[type, ...]:
    """The layer types with a handler (containers included)."""
    return tuple(_LAYERS)


# ------------------------------------------------------------------------------------------- steps
@dataclass
class Step:
    """One compiled layer: ``run(x, composite)`` computes its output with LRP rules as backward."""

    name: str
    module: nn.Module
    kind: ClassVar[str] = "step"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        """The layer's output for ``x``; its autograd backward maps relevance by ``composite``'s rules."""
        raise NotImplementedError

    def substeps(self) -> list[Step]:
        """Nested steps (a residual block's branch and shortcut); none for a plain layer."""
        return []


@dataclass
class LinearStep(Step):
    """``Conv2d`` / ``Conv3d`` / ``Linear`` with an optional folded BatchNorm; ``is_first``: the first one."""

    kind: ClassVar[str] = "linear"
    op: LinearOp | None = None
    bn: nn.Module | None = None
    is_first: bool = False

    _params: tuple = field(default=(), init=False, repr=False, compare=False)

    def params(self) -> tuple[Tensor, Tensor | None]:
        """Current (detached) weight and bias, with the BatchNorm folded in.

        The same tensors are returned while the module's and the BatchNorm's tensors are unchanged (rules
        may keep what they derive from them, see ``rules.tensor_key``); an in-place change of any of them
        (training, a randomisation test) gives new ones.
        """
        sources = [self.module.weight, self.module.bias]
        if self.bn is not None:
            sources += [self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias]
        key = None
        if not any(t is not None and t.is_inference() for t in sources):  # inference tensors have no versions
            key = tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if key is not None and self._params and self._params[0] == key:
            return self._params[2]
        weight = self.module.weight.detach()
        bias = None if self.module.bias is None else self.module.bias.detach()
        params = (weight, bias) if self.bn is None else fold_batch_norm(weight, bias, self.bn)
        self._params = (key, sources, params)  # the sources keep their storage (and data_ptr) alive
        return params

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        weight, bias = self.params()
        return LRPLinearFunction.apply(x, weight, bias, composite.rule_for(self.module, self.is_first), self.op)


@dataclass
class ActivationStep(Step):
    """An elementwise activation: the composite's activation rule (pass-through)."""

    kind: ClassVar[str] = "activation"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return composite.activation.apply(x, self.module.forward)


@dataclass
class MaxPoolStep(Step):
    """Max pooling: the composite's max-pool rule (winner takes all)."""

    kind: ClassVar[str] = "maxpool"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return composite.maxpool.apply(x, self.module.forward)


@dataclass
class AvgPoolStep(Step):
    """Average pooling: the composite's sum rule."""

    kind: ClassVar[str] = "avgpool"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return composite.avgpool.apply(x, self.module.forward)


@dataclass
class FlattenStep(Step):
    """A reshape (``nn.Flatten``): relevance is reshaped back by autograd."""

    kind: ClassVar[str] = "flatten"

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return self.module.forward(x)


@dataclass
class ResidualStep(Step):
    """``branch(x) + shortcut(x)`` (an empty ``shortcut`` is the identity) with the composite's sum rule."""

    kind: ClassVar[str] = "residual"
    branch: list[Step] = field(default_factory=list)
    shortcut: list[Step] = field(default_factory=list)

    def substeps(self) -> list[Step]:
        return [*self.branch, *self.shortcut]

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        a = run_steps(self.branch, composite, x)
        b = run_steps(self.shortcut, composite, x) if self.shortcut else x
        return composite.residual.add(a, b)


@dataclass
class ConcatStep(Step):
    """Parallel branches on the same input, their outputs joined along ``dim`` (an inception block): each branch
    gets the relevance of its own channels (``torch.cat`` routes it back, nothing is mixed)."""

    kind: ClassVar[str] = "concat"
    branches: list[list[Step]] = field(default_factory=list)
    dim: int = 1

    def substeps(self) -> list[Step]:
        return [s for branch in self.branches for s in branch]

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        return torch.cat([run_steps(branch, composite, x) for branch in self.branches], dim=self.dim)


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


# ------------------------------------------------------------------------------------------- compiler
class Compiler:
    """Compiles modules into steps through the layer registry.

    Attributes a handler may read and set: ``steps`` (the list being built), ``seen_linear`` (whether a
    conv / linear layer came before: the next one is not "first") and ``nonnegative`` (whether the
    current tensor is known to be >= 0, after ReLU / sigmoid: saves a device sync per layer).
    """

    def __init__(self, first_layer: bool = True) -> None:
        self.steps: list[Step] = []
        self.seen_linear = not first_layer
        self.nonnegative = False

    def add(self, step: Step) -> None:
        """Append ``step`` to the list being built."""
        self.steps.append(step)

    def compile(self, module: nn.Module, prefix: str) -> list[Step]:
        """Compile ``module`` into a new list of steps (the compiler's state carries on)."""
        outer, self.steps = self.steps, []
        try:
            self.visit(module, prefix)
            return self.steps
        finally:
            self.steps = outer

    def visit(self, module: nn.Module, name: str) -> None:
        """Compile one module into the current list through its handler; one clear error if it has none."""
        handler = layer_handler(module)
        if handler is None:
            raise ConfigError(
                f"VideoLRP cannot explain {name} ({type(module).__name__}): no LRP handler for this layer type; "
                "register one with vidxai.xai.register_layer (docs/architecture.md, 'Adding a layer type')"
            )
        handler(self, name, module)


def compile_sequential(module: nn.Module, prefix: str, first_layer: bool = True) -> list[Step]:
    """Compile ``module`` (a layer or nested ``nn.Sequential``) into steps; one clear error if unsupported.

    ``first_layer``: whether its first conv / linear layer is the network's first (the composites' special
    first-layer rule); ``False`` for the stages after the first.
    """
    return Compiler(first_layer).compile(module, prefix)


def flat_steps(steps: list[Step]) -> list[Step]:
    """``steps`` with every nested step (depth first, in order): all layers of a compiled module."""
    return [s for step in steps for s in (step, *flat_steps(step.substeps()))]


def weighted_layers(module: nn.Module, prefix: str) -> list[LinearStep] | None:
    """The conv / linear layers of ``module`` as the explainer compiles them (nested ones included, with their
    folded BatchNorm), or ``None`` when the layer registry cannot compile ``module`` (e.g. an LSTM)."""
    try:
        steps = compile_sequential(module, prefix)
    except ConfigError:
        return None
    return [s for s in flat_steps(steps) if isinstance(s, LinearStep)]


def run_steps(steps: list[Step], composite: Composite, x: Tensor) -> Tensor:
    """Run ``steps`` on ``x`` with the rules of ``composite`` as backward (``x`` may or may not need grad)."""
    for step in steps:
        x = step.run(x, composite)
    return x


# ------------------------------------------------------------------------------------------- built-in handlers
@register_layer(nn.Sequential)
def _sequential(compiler: Compiler, name: str, module: nn.Module) -> None:
    for child_name, child in module.named_children():
        compiler.visit(child, f"{name}.{child_name}")


@register_layer(nn.Conv2d, nn.Conv3d, nn.Linear)
def _linear(compiler: Compiler, name: str, module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.padding_mode != "zeros":
        raise ConfigError(f"VideoLRP cannot explain {name}: padding_mode={module.padding_mode!r}; only 'zeros'")
    op = LinearOp.of(module, nonnegative_input=compiler.nonnegative)
    compiler.add(LinearStep(name, module, op=op, is_first=not compiler.seen_linear))
    compiler.seen_linear, compiler.nonnegative = True, False


@register_layer(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(compiler: Compiler, name: str, module: nn.Module) -> None:
    last = compiler.steps[-1] if compiler.steps else None
    if not isinstance(last, LinearStep) or last.bn is not None:
        raise ConfigError(
            f"VideoLRP cannot explain {name}: a BatchNorm must directly follow a Conv2d/Linear (or Conv3d) to be folded"
        )
    if module.running_mean is None:
        raise ConfigError(f"VideoLRP cannot explain {name}: BatchNorm without running statistics")
    last.bn = module


_NONNEGATIVE_OUTPUT = (nn.ReLU, nn.ReLU6, nn.Sigmoid)


@register_layer(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh)
def _activation(compiler: Compiler, name: str, module: nn.Module) -> None:
    if getattr(module, "inplace", False):  # would overwrite the saved output of the layer before
        module = copy.copy(module)
        module.inplace = False
    compiler.add(ActivationStep(name, module))
    compiler.nonnegative = isinstance(module, _NONNEGATIVE_OUTPUT)


@register_layer(
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d
)
def _maxpool(compiler: Compiler, name: str, module: nn.Module) -> None:
    if getattr(module, "return_indices", False):
        raise ConfigError(f"VideoLRP cannot explain {name}: max pooling with return_indices=True")
    compiler.add(MaxPoolStep(name, module))


@register_layer(
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d
)
def _avgpool(compiler: Compiler, name: str, module: nn.Module) -> None:
    compiler.add(AvgPoolStep(name, module))


@register_layer(nn.Flatten)
def _flatten(compiler: Compiler, name: str, module: nn.Module) -> None:
    compiler.add(FlattenStep(name, module))


@register_layer(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
def _skip(compiler: Compiler, name: str, module: nn.Module) -> None:
    """Identity in eval mode: no step."""


def _residual(branches: tuple[str, ...]) -> Handler:
    """Handler of a residual block ``relu(branch(x) + (downsample(x) if downsample else x))``."""

    def handler(compiler: Compiler, name: str, module: nn.Module) -> None:
        block_input_nonnegative = compiler.nonnegative
        branch = [s for part in branches for s in compiler.compile(getattr(module, part), f"{name}.{part}")]
        compiler.nonnegative = block_input_nonnegative
        downsample = module.downsample
        shortcut = [] if downsample is None else compiler.compile(downsample, f"{name}.downsample")
        compiler.add(ResidualStep(name, module, branch=branch, shortcut=shortcut))
        compiler.nonnegative = False
        compiler.visit(module.relu, f"{name}.relu")

    return handler


def _concat(branches: tuple[str, ...]) -> Handler:
    """Handler of an inception block ``cat([branch(x) for branch in branches], dim=1)``."""

    def handler(compiler: Compiler, name: str, module: nn.Module) -> None:
        block_input_nonnegative, compiled, ends = compiler.nonnegative, [], []
        for part in branches:
            compiler.nonnegative = block_input_nonnegative
            compiled.append(compiler.compile(getattr(module, part), f"{name}.{part}"))
            ends.append(compiler.nonnegative)
        compiler.add(ConcatStep(name, module, branches=compiled))
        compiler.nonnegative = all(ends)

    return handler


def _register_torchvision_blocks() -> None:
    """torchvision's video blocks: the residual blocks of ``VideoResNet`` (r3d_18, mc3_18, r2plus1d_18; their stems
    and ``Conv2Plus1D`` are ``nn.Sequential``, ``Conv3DSimple`` / ``Conv3DNoTemporal`` are ``nn.Conv3d``) and S3D's
    inception block (its ``TemporalSeparableConv`` / ``Conv3dNormActivation`` are ``nn.Sequential``); the mean
    that ends S3D's forward (:class:`vidxai.models.layers.ClipMean`) is average pooling."""
    from torchvision.models.video.resnet import BasicBlock, Bottleneck
    from torchvision.models.video.s3d import SepInceptionBlock3D


    register_layer(BasicBlock, exact=True)(_residual(("conv1", "conv2")))
    register_layer(Bottleneck, exact=True)(_residual(("conv1", "conv2", "conv3")))
    register_layer(SepInceptionBlock3D, exact=True)(_concat(("branch0", "branch1", "branch2", "branch3")))
    register_layer(ClipMean, exact=True)(_clip_mean)


@dataclass
class ClipMeanStep(AvgPoolStep):
    """The mean over every axis after the channels: the sum rule, or exactly the identity (a reshape) when there
    is one position only (S3D on the clip size it was trained for: its pooled map is 1 x 1 x 1)."""

    def run(self, x: Tensor, composite: Composite) -> Tensor:
        if x[0, 0].numel() == 1:
            return x.flatten(1)
        return super().run(x, composite)


def _clip_mean(compiler: Compiler, name: str, module: nn.Module) -> None:
    compiler.add(ClipMeanStep(name, module))


_register_torchvision_blocks()
