"""The explainer's extension points are registries: a new layer type, rule, or stage kind is one registration.

The examples are those of docs/architecture.md ("Adding a layer type", "Adding a rule", "Adding a stage
kind"); each toy network is then explained and checked against an independent oracle (Captum's
``InputXGradient``: LRP-0 on a piecewise-linear network is gradient x input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from captum.attr import InputXGradient
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models import contract
from vidxai.models.contract import Stage, explain_stages, register_stage_kind, run_stages
from vidxai.xai import RULES, Composite, Epsilon, Step, VideoLRP, ZPlus, cnn, propagators, register_layer, rules
from vidxai.xai.cnn import compile_sequential
from vidxai.xai.rules import at_least, numbers, register_rule


@pytest.fixture
def restore_registries():
    """Registrations made by a test are undone after it (the registries are process-wide)."""
    saved = [(d, dict(d)) for d in (cnn._LAYERS, rules._RULES, propagators._PROPAGATORS, contract._KINDS)]
    yield
    for registry, content in saved:
        registry.clear()
        registry.update(content)


# ------------------------------------------------------------------------------ a new layer type
class Scale(nn.Module):
    """A layer the explainer does not know: ``y = x * weight`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.reshape(1, -1, *((1,) * (x.ndim - 2)))


def _register_scale() -> None:
    # --- the docs example, "Adding a layer type"
    @dataclass
    class ScaleStep(Step):
        kind: ClassVar[str] = "scale"

        def run(self, x: Tensor, composite: Composite) -> Tensor:
            # elementwise and linear: LRP-0 (R_i = x_i w_i R_i / (w_i x_i)) passes relevance through
            return composite.activation.apply(x, self.module.forward)

    @register_layer(Scale)
    def scale(compiler: cnn.Compiler, name: str, module: nn.Module) -> None:
        compiler.add(ScaleStep(name, module))
        compiler.nonnegative = compiler.nonnegative and bool((module.weight >= 0).all())


class _ToyNet(nn.Module):
    """Per-frame ``Conv2d -> Scale -> ReLU -> pool`` then a linear head, written to the explainer contract."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), Scale(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        return self.head(self.encoder(x.flatten(0, 1)).reshape(b, t, -1))

    def explain_stages(self) -> tuple[Stage, ...]:
        return (Stage("encoder", "frames", self.encoder), Stage("head", "head", self.head))


def test_unknown_layer_type_is_one_error_pointing_at_the_docs() -> None:
    with pytest.raises(ConfigError, match=r"cannot explain net\.1 \(Scale\): .*'Adding a layer type'"):
        compile_sequential(nn.Sequential(nn.Conv2d(3, 4, 3), Scale(4)), "net")
    with pytest.raises(ValueError, match=r"cannot explain encoder\.1 \(Scale\)"):
        VideoLRP(_ToyNet().double(), "z")


def test_a_registered_layer_handler_explains_the_toy_net(restore_registries) -> None:
    _register_scale()
    torch.manual_seed(0)
    net = _ToyNet().double().eval()
    x = torch.randn(1, 2, 3, 8, 8, dtype=torch.float64)
    ours = VideoLRP(net, "z").attribute(x, target=1)
    oracle = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=1).detach()
    assert oracle.abs().sum() > 0
    # the stabilisers (1e-9 per layer, 1e-6 in the average pooling) shift each share by eps / |z|
    torch.testing.assert_close(ours, oracle, rtol=1e-4, atol=1e-5 * float(oracle.abs().max()))


def test_handler_lookup_follows_the_mro_unless_exact(restore_registries) -> None:
    class MyReLU(nn.ReLU):
        pass

    assert cnn.layer_handler(MyReLU()) is cnn.layer_handler(nn.ReLU())  # a subclass gets its parent's handler
    from torchvision.models.video.resnet import BasicBlock

    class MyBlock(BasicBlock):  # may override forward: an exact-type handler does not cover it
        pass

    assert cnn.layer_handler(MyBlock.__new__(MyBlock)) is None


# ------------------------------------------------------------------------------ a new rule
def _register_zplus_epsilon() -> None:
    # --- the docs example, "Adding a rule"
    @register_rule(
        "zplus_epsilon", "z-plus on conv layers, epsilon on linear layers", {"epsilon": 0.25},
        [numbers("epsilon"), at_least(0.0, "epsilon", strict=True)],
    )  # fmt: skip
    def zplus_epsilon(epsilon: float) -> Composite:
        return Composite(conv=ZPlus(), linear=Epsilon(epsilon))


def test_a_registered_rule_checks_its_own_parameters_and_explains(restore_registries) -> None:
    _register_zplus_epsilon()
    assert RULES["zplus_epsilon"].resolve() == {"epsilon": 0.25}
    with pytest.raises(ConfigError, match=r"rule 'zplus_epsilon': parameter epsilon=0.0 must be > 0"):
        VideoLRP(_ToyNet(), "zplus_epsilon", epsilon=0.0)
    with pytest.raises(ConfigError, match=r"rule 'zplus_epsilon' has no parameter\(s\) \['gamma'\]"):
        VideoLRP(_ToyNet(), "zplus_epsilon", gamma=1.0)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    net = net.double()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    start = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    steps = compile_sequential(net, "net")
    (rel,) = torch.autograd.grad(cnn.run_steps(steps, RULES["zplus_epsilon"].build(epsilon=0.5), leaf), leaf, start)
    zennit = pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.types import Activation, Convolution

    oracle = LayerMapComposite(
        [(Activation, zennit.rules.Pass()), (Convolution, zennit.rules.ZPlus()), (nn.Linear, zennit.rules.Epsilon(0.5))]
    )
    with Gradient(net, oracle) as attributor:
        _, z_rel = attributor(x.clone(), attr_output=start)
    assert z_rel.abs().sum() > 0
    torch.testing.assert_close(rel, z_rel, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------------------ a new stage kind
def _register_time_mean() -> None:
    # --- the docs example, "Adding a stage kind": average the per-frame features over time
    register_stage_kind("time_mean", lambda module, x: x.mean(dim=1), after=("frames",), before=("head",))

    @propagators.register_propagator("time_mean")
    class TimeMean:
        def __init__(self, stage: Stage, context: propagators.PropagatorContext) -> None:
            self.eps = 1e-9

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x.mean(dim=1), x

        def relevance(self, x: Tensor, r_out: Tensor) -> Tensor:
            z = x.mean(dim=1, keepdim=True)
            return x / x.shape[1] * r_out[:, None] / rules.stabilize(z, self.eps)  # the z rule of the mean


class _MeanNet(_ToyNet):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        return self.head(self.encoder(x.flatten(0, 1)).reshape(b, t, -1).mean(dim=1))

    def explain_stages(self) -> tuple[Stage, ...]:
        return (Stage("encoder", "frames", self.encoder), Stage("t", "time_mean", nn.Identity()),
                Stage("head", "head", self.head))


def test_a_registered_stage_kind_and_propagator(restore_registries) -> None:
    with pytest.raises(TypeError, match="registered kind"):
        explain_stages(_MeanNet())
    _register_time_mean()
    torch.manual_seed(2)
    net = _MeanNet().double().eval()
    x = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(run_stages(explain_stages(net), x), net(x), rtol=0, atol=1e-12)
    ours = VideoLRP(net, "z").attribute(x, target=[0, 2])
    oracle = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=[0, 2]).detach()
    torch.testing.assert_close(ours, oracle, rtol=1e-4, atol=1e-5 * float(oracle.abs().max()))


def test_a_stage_kind_without_propagator_is_one_error(restore_registries) -> None:
    register_stage_kind("time_mean", lambda module, x: x.mean(dim=1), after=("frames",), before=("head",))
    with pytest.raises(ConfigError, match="no propagator for stage kind 'time_mean'"):
        VideoLRP(_MeanNet(), "z")


def test_order_comes_from_the_registry() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.lstm = nn.LSTM(2, 2)

        def explain_stages(self) -> tuple[Stage, ...]:
            return (Stage("c", "clip", nn.Identity()), Stage("r", "recurrent", self.lstm),
                    Stage("head", "head", self.head))

    with pytest.raises(TypeError, match=r"'recurrent' cannot follow 'clip'"):
        explain_stages(Bad())
    assert {"frames", "recurrent", "clip", "head"} <= set(contract.STAGE_KINDS)
    assert contract.STAGE_KINDS["head"].terminal and not contract.STAGE_KINDS["clip"].terminal


# ------------------------------------------------------------------------------ the head follows the rule
def test_head_follows_the_rule_but_keeps_arras_after_a_recurrent_stage() -> None:
    from vidxai.models import VGG16LSTM
    from vidxai.xai.recurrent import arras_composite

    clip_net = _ToyNet()
    clip_net.encoder[1] = nn.Identity()
    head = VideoLRP(clip_net, "epsilon", epsilon=0.3).propagators[-1]
    assert head.composite.linear.epsilon == 0.3  # frames -> head: the chosen rule
    lstm_net = VGG16LSTM(3, hidden_size=4)
    head = VideoLRP(lstm_net, "epsilon", epsilon=0.3, lstm_eps=1e-4, bias_factor=1).propagators[-1]
    expected = arras_composite(1e-4, 1.0)
    assert repr(head.composite) == repr(expected)  # the Arras head: epsilon(lstm_eps) with bias_factor


# ------------------------------------------------------------------------------ box bounds of epsilon_gamma_box
def test_box_bounds_come_from_the_preprocess_or_the_params() -> None:
    net = _ToyNet()
    net.encoder[1] = nn.Identity()
    default = VideoLRP(net, "epsilon_gamma_box").rule_params
    assert default["low"] == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    assert default["high"] == pytest.approx([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.5], "num_frames": 8}
    explainer = VideoLRP(net, "epsilon_gamma_box", preprocess=pre)
    assert explainer.rule_params["low"] == [-2.0, -1.0, -1.0] and explainer.rule_params["high"] == [2.0, 1.0, 1.0]
    assert explainer.composite.first.low == (-2.0, -1.0, -1.0)
    given = VideoLRP(net, "epsilon_gamma_box", preprocess=pre, low=-3.0, high=3.0).rule_params
    assert (given["low"], given["high"]) == (-3.0, 3.0)  # explicit parameters win
    assert "low" not in VideoLRP(net, "epsilon", preprocess=pre).rule_params  # other rules ignore it
    with pytest.raises(ConfigError, match="set both low and high"):
        VideoLRP(net, "epsilon_gamma_box", low=-1.0)
    with pytest.raises(ConfigError, match="must be below high"):
        VideoLRP(net, "epsilon_gamma_box", low=[0.0, 0.0, 0.0], high=[1.0, 0.0, 1.0])
    with pytest.raises(ConfigError, match="must be a finite number or one per input channel"):
        VideoLRP(net, "epsilon_gamma_box", low="a", high=1.0)


def test_box_rule_with_wrong_channel_count_is_one_error() -> None:
    net = _ToyNet()
    net.encoder[1] = nn.Identity()
    explainer = VideoLRP(net, "epsilon_gamma_box", low=[0.0, 0.0], high=[1.0, 1.0])
    with pytest.raises(ValueError, match="ZBox bounds have 2 values but the layer input has shape"):
        explainer.attribute(torch.rand(1, 2, 3, 8, 8), target=0)
