"""LRP for the 3D CNN (R(2+1)D-18) against independent oracles, in float64.

* rule ``z`` on the whole network (BatchNorm folded, residual additions, pooling, head) equals Captum's
  ``InputXGradient``: LRP-0 is gradient x input on a piecewise-linear network, and the proportional
  residual rule keeps it so;
* with every bias and BatchNorm shift zero the total relevance equals the target logit;
* every rule on a plain ``Conv3d``/``BatchNorm3d``/``ReLU``/``MaxPool3d``/``AvgPool3d`` stack, and on a
  torchvision residual block written in zennit's form (its ``Sum`` layer), equals zennit 0.5.1.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

zennit = pytest.importorskip("zennit")
from captum.attr import InputXGradient  # noqa: E402
from helpers import ZennitBlock, randomise_batch_norm, zennit_composite, zennit_form  # noqa: E402
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402

from vidxai.models import R2Plus1D  # noqa: E402
from vidxai.xai import RULES, VideoLRP, make_composite  # noqa: E402
from vidxai.xai.cnn import compile_sequential, run_steps  # noqa: E402


@functools.cache
def _net(shifts: bool = True) -> R2Plus1D:
    """A narrow float64 R(2+1)D-18 (4/8/16/32 channels) in eval mode (built once; tests must not change it)."""
    torch.manual_seed(0)
    net = R2Plus1D(3, width=1 / 16).double().eval()
    randomise_batch_norm(net, shifts)
    with torch.no_grad():
        net.fc.weight.normal_(0, 0.5)
        net.fc.bias.normal_(0, 0.1) if shifts else net.fc.bias.zero_()
    return net


def _clip(t: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, t, 3, size, size, generator=g, dtype=torch.float64)


def test_z_rule_equals_captum_input_x_gradient_on_r2plus1d() -> None:
    net, x = _net(), _clip()
    target = int(net(x).argmax())
    ours = VideoLRP(net, "z", lstm_eps=1e-12).attribute(x, target=target)
    captum = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=target).detach()
    assert captum.abs().max() > 0 and ours.shape == x.shape
    # stabilisers (z: 1e-9 per conv, sum rule: 1e-6) shift each neuron's share by eps / |z|
    scale = float(captum.abs().max())
    torch.testing.assert_close(ours, captum, rtol=1e-4, atol=1e-5 * scale)
    assert not torch.allclose(ours, captum * 1.01, rtol=1e-4, atol=1e-5 * scale)


def test_r2plus1d_relevance_sums_to_target_logit_without_biases() -> None:
    # without biases the network is positively homogeneous: a large input makes the relevance that the
    # fixed stabilisers absorb (about 1e-6 * |w| per pooled or summed neuron) negligible against the logit
    net, x = _net(shifts=False), 100.0 * _clip(seed=1)
    explainer = VideoLRP(net, "z", lstm_eps=1e-12)
    for target in (0, 2):
        expl = explainer.explain(x[0], target=target)
        logit = float(net(x)[0, target].detach())
        assert abs(logit) > 1e-6
        assert expl.total() == pytest.approx(logit, rel=1e-5)
        assert float(expl.feature.sum()) == pytest.approx(logit, rel=1e-6)  # at the last feature map


def test_explanation_fields_and_chunk_frames_refused() -> None:
    net = _net()
    expl = VideoLRP(net, "alpha_beta").explain(_clip(t=8)[0])
    assert expl.pixel.shape == (8, 16, 16) and expl.frame.shape == (8,) and expl.relevance.shape == (8, 3, 16, 16)
    assert expl.feature.shape == (1, 32)  # 8 frames -> one time step of the last map, 32 channels
    assert expl.initial_state == {} and set(expl.to_numpy()) >= {"pixel", "frame", "feature", "logits"}
    torch.testing.assert_close(expl.frame, expl.pixel.flatten(1).sum(1))
    assert VideoLRP(net, "epsilon").explain(_clip(t=9)[0]).feature.shape == (2, 32)  # ceil(9 / 8)
    with pytest.raises(ValueError, match=r"chunk_frames=2 does not apply to R2Plus1D: .*3D convolutions"):
        VideoLRP(net, "epsilon", chunk_frames=2)


def test_every_rule_runs_on_r2plus1d_and_leaves_it_untouched() -> None:
    net = copy.deepcopy(_net())
    net.train()  # explain uses eval semantics without switching the caller's modes
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = _clip(t=4, seed=2)
    for rule in RULES:
        rel = VideoLRP(net, rule).attribute(x, target=1)
        assert torch.isfinite(rel).all() and rel.abs().sum() > 0, rule
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ------------------------------------------------------------------------------ zennit oracles
def _ours(module: nn.Module, rule: str, x: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_(True)
    out = run_steps(compile_sequential(module, "net"), make_composite(rule), leaf)
    (rel,) = torch.autograd.grad(out, leaf, start)
    return out.detach(), rel


def _zennit(module: nn.Module, rule: str, x: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with Gradient(module, zennit_composite(rule, residual=True, merge_batch_norm=True)) as attributor:
        out, rel = attributor(x.clone(), attr_output=start)
    return out.detach(), rel


@functools.cache
def _plain_stack() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv3d(3, 6, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
        nn.Conv3d(6, 5, (3, 1, 1), padding=(1, 0, 0)), nn.BatchNorm3d(5), nn.ReLU(),
        nn.Conv3d(5, 4, 3, stride=(2, 1, 1), padding=1), nn.ReLU(), nn.AvgPool3d((1, 2, 2)),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3),
    ).double().eval()  # fmt: skip
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    # zennit's MergeBatchNorm leaves an "identity" BN computing x / sqrt(1 + eps): exact for eps=0
    randomise_batch_norm(net, eps=0.0)
    return net


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rules_on_a_plain_conv3d_stack_equal_zennit(rule: str) -> None:
    net = _plain_stack()
    x = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    start = torch.randn(2, 3, dtype=torch.float64)
    out, rel = _ours(net, rule, x, start)
    z_out, z_rel = _zennit(net, rule, x, start)
    torch.testing.assert_close(out, net(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, z_out, rtol=1e-10, atol=1e-12)
    assert rel.abs().sum() > 0
    torch.testing.assert_close(rel, z_rel, rtol=1e-8, atol=1e-10 * float(z_rel.abs().max()))


@pytest.mark.parametrize("downsample", [True, False], ids=["downsample", "identity"])
@pytest.mark.parametrize("rule", ["epsilon", "alpha_beta", "preset_b_flat"])
def test_residual_block_equals_zennit_sum_rule(rule: str, downsample: bool) -> None:
    """The residual addition is zennit's ``Sum`` with the ``Norm`` rule: relevance split in proportion."""
    torch.manual_seed(4)
    if downsample:
        shortcut = nn.Sequential(nn.Conv3d(3, 4, 1, stride=2, bias=False), nn.BatchNorm3d(4))
        block = BasicBlock(3, 4, Conv2Plus1D, stride=2, downsample=shortcut)
    else:
        block = BasicBlock(4, 4, Conv2Plus1D)
    block = block.double().eval()
    randomise_batch_norm(block, eps=0.0)
    net = nn.Sequential(nn.Conv3d(3, block.conv1[0][0].in_channels, 1), nn.ReLU(), block).double()
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
    start = torch.randn_like(net(x))
    out, rel = _ours(net, rule, x, start)
    z_net = nn.Sequential(net[0], net[1], ZennitBlock(block))
    z_out, z_rel = _zennit(z_net, rule, x, start)
    torch.testing.assert_close(out, net(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, z_out, rtol=1e-10, atol=1e-12)
    assert rel.abs().sum() > 0
    torch.testing.assert_close(rel, z_rel, rtol=1e-8, atol=1e-10 * float(z_rel.abs().max()))


# ------------------------------------------------------------------------------ the head follows the rule
def test_z_rule_with_default_settings_equals_input_x_gradient() -> None:
    """No ``lstm_eps`` override: the head of a clip network follows the rule (z), so LRP-0 is gradient x input
    up to the fixed stabilisers (1e-9 per conv / linear, 1e-6 per pooled or summed neuron)."""
    net, x = _net(), _clip()
    target = int(net(x).argmax())
    captum = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=target).detach()
    ours = VideoLRP(net, "z").attribute(x, target=target)
    scale = float(captum.abs().max())
    assert float((ours - captum).abs().max()) < 1e-4 * scale  # was 6e-3 with the head on epsilon(lstm_eps)
    torch.testing.assert_close(VideoLRP(net, "z", lstm_eps=0.5).attribute(x, target=target), ours, rtol=0, atol=0)


# ------------------------------------------------------------------------------ composites vs zennit, whole network
@functools.cache
def _net_bn_eps0() -> R2Plus1D:
    net = copy.deepcopy(_net())
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 0.0  # zennit's MergeBatchNorm leaves x / sqrt(1 + eps): exact for eps=0
    return net


@pytest.mark.parametrize("rule", ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
def test_composites_on_the_whole_r2plus1d_equal_zennit(rule: str) -> None:
    """vidxai's composite on R(2+1)D (head included) equals zennit's named composite on the same network with
    its residual blocks in zennit's form; the box bounds come from the default normalisation."""
    net = _net_bn_eps0()
    x = _clip(seed=3)
    target = int(net(x).argmax())
    ours = VideoLRP(net, rule).attribute(x, target=target)
    stages = [net.stem, net.layer1, net.layer2, net.layer3, net.layer4, net.avgpool, nn.Flatten(), net.dropout, net.fc]
    z_net = nn.Sequential(*[zennit_form(m) for m in stages]).eval()
    logits = z_net(x.transpose(1, 2))
    torch.testing.assert_close(logits, net(x), rtol=1e-10, atol=1e-12)
    start = torch.zeros_like(logits)
    start[0, target] = logits[0, target]
    with Gradient(z_net, zennit_composite(rule, merge_batch_norm=True)) as attributor:
        _, z_rel = attributor(x.transpose(1, 2).clone(), attr_output=start.detach())
    z_rel = z_rel.transpose(1, 2)
    assert z_rel.abs().sum() > 0
    torch.testing.assert_close(ours, z_rel, rtol=1e-7, atol=1e-10 * float(z_rel.abs().max()))
