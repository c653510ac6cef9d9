"""CNN rules against independent oracles: zennit 0.5.1 for every rule, Captum's InputXGradient for ``z``."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

zennit = pytest.importorskip("zennit")
from captum.attr import InputXGradient  # noqa: E402
from helpers import ZENNIT_ORACLES, zennit_composite  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402

from vidxai.models.vgg16_lstm import make_vgg16_features  # noqa: E402
from vidxai.xai import RULES, VideoLRP, make_composite  # noqa: E402
from vidxai.xai.cnn import compile_sequential, fold_batch_norm, run_steps  # noqa: E402
from vidxai.xai.rules import stabilize  # noqa: E402


@functools.cache
def _encoder(batch_norm: bool, bn_eps: float = 0.0) -> nn.Sequential:
    """VGG16(-BN) encoder as in VGG16LSTM, float64, random weights, biases and BN statistics (built once)."""
    torch.manual_seed(0)
    enc = nn.Sequential(*make_vgg16_features(batch_norm), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc = enc.double().eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)  # torchvision zeros them: randomise, or bias handling goes untested
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                # zennit's MergeBatchNorm leaves an "identity" BN computing x / sqrt(1 + eps): exact for eps=0
                m.eps = bn_eps
    return enc


def _ours(enc: nn.Module, rule: str, x: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaf = x.clone().requires_grad_(True)
    out = run_steps(compile_sequential(enc, "encoder"), make_composite(rule), leaf)
    (r,) = torch.autograd.grad(out, leaf, relevance)
    return out.detach(), r


def test_every_oracle_is_a_registered_rule() -> None:
    """The oracles follow the registry (a renamed or removed rule does not leave its oracle test behind)."""
    assert set(ZENNIT_ORACLES) <= set(RULES), sorted(set(ZENNIT_ORACLES) - set(RULES))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_registered_rule_keeps_the_forward_and_redistributes_linearly(rule: str) -> None:
    """Properties every LRP rule has, checked for each registered rule (a new one included, oracle or not):
    its defaults pass its own checks, the forward is the network's, and the relevance is finite, not all zero,
    shaped like the input and linear in the relevance it starts from (a rule's redistribution depends on the
    input only)."""
    spec = RULES[rule]
    assert spec.description.strip() and spec.resolve() == dict(spec.defaults), rule
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 5, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).double().eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a, b = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    out, rel_a = _ours(net, rule, x, a)
    _, rel_b = _ours(net, rule, x, b)
    _, rel_ab = _ours(net, rule, x, 2.0 * a - 3.0 * b)
    torch.testing.assert_close(out, net(x), rtol=1e-10, atol=1e-12)
    assert rel_a.shape == x.shape and torch.isfinite(rel_a).all() and rel_a.abs().sum() > 0, rule
    scale = float(rel_ab.abs().max())
    torch.testing.assert_close(rel_ab, 2.0 * rel_a - 3.0 * rel_b, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize(
    ("rule", "batch_norm"),
    [(rule, False) for rule in sorted(ZENNIT_ORACLES)] + [("epsilon", True), ("preset_b_flat", True)],
    ids=lambda v: {False: "vgg16", True: "vgg16_bn"}.get(v, v) if isinstance(v, bool) else v,
)
def test_cnn_rule_equals_zennit(rule: str, batch_norm: bool) -> None:
    """Every rule with a zennit oracle on VGG16; BatchNorm folding (rule-independent) on VGG16-BN with two rules
    incl. flat."""
    enc = _encoder(batch_norm)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)  # one frame: float64 VGG16 is slow on 2 CPU cores
    start = torch.randn(1, 512, dtype=torch.float64)  # the same starting relevance at the encoder output
    composite = zennit_composite(rule, merge_batch_norm=batch_norm)
    with Gradient(enc, composite) as attributor:
        z_out, z_rel = attributor(x.clone(), attr_output=start)
    out, rel = _ours(enc, rule, x, start)
    torch.testing.assert_close(out, enc(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, z_out, rtol=1e-10, atol=1e-12)
    assert rel.abs().sum() > 0
    torch.testing.assert_close(rel, z_rel, rtol=1e-7, atol=1e-10 * float(z_rel.abs().max()))


def test_batch_norm_fold_is_exact_with_default_eps() -> None:
    enc = _encoder(batch_norm=True, bn_eps=1e-5)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out, _ = _ours(enc, "epsilon", x, torch.ones(2, 512, dtype=torch.float64))
    torch.testing.assert_close(out, enc(x), rtol=1e-10, atol=1e-12)
    conv, bn = enc[0], enc[1]
    w, b = fold_batch_norm(conv.weight, conv.bias, bn)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)))


def test_z_rule_equals_captum_input_x_gradient() -> None:
    """LRP-0 on a ReLU net is gradient x input, biases included, when the starting relevance is a * df/da.

    Induction: if R(z_k) = z_k df/dz_k, then R_i = x_i sum_k w_ik R(z_k) / z_k = x_i df/dx_i; the biases
    drop out of both sides alike. We start from f = sum(G * convs(x)), i.e. R = convs(x) * G, on the conv
    stack without the final average pooling (whose Norm rule has zennit's stabiliser 1e-6, not 1e-9).
    """
    convs = _encoder(batch_norm=False)[:-2]
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    weights = torch.randn(1, 512, 1, 1, dtype=torch.float64)
    feats = convs(x).detach()
    _, rel = _ours(convs, "z", x, feats * weights)
    captum = InputXGradient(lambda inp: (convs(inp) * weights).flatten(1).sum(1, keepdim=True)).attribute(
        x.clone().requires_grad_(True), target=0
    ).detach()
    assert rel.abs().max() > 0
    # z's stabiliser 1e-9 changes each neuron's share by 1e-9 / |z_k|: up to ~1e-5 for the smallest |z_k|
    torch.testing.assert_close(rel, captum, rtol=1e-4, atol=1e-4 * float(captum.abs().max()))
    assert not torch.allclose(rel, captum * 1.01, rtol=1e-4, atol=1e-4 * float(captum.abs().max()))


def test_end_to_end_cnn_relevance_equals_zennit_from_feature_relevance() -> None:
    """The engine's pixel relevance equals zennit's when zennit starts from the engine's feature relevance."""
    from vidxai.models import VGG16LSTM

    torch.manual_seed(1)
    model = VGG16LSTM(4, hidden_size=8).double().eval()
    model.encoder.load_state_dict(_encoder(batch_norm=False).state_dict())
    clip = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    explainer = VideoLRP(model, "alpha_beta")
    out = explainer._propagate(clip[None], target=2)
    with Gradient(model.encoder, zennit_composite("alpha_beta")) as attributor:
        _, z_rel = attributor(clip.clone(), attr_output=out["feature"][0])
    torch.testing.assert_close(out["relevance"][0], z_rel, rtol=1e-7, atol=1e-10 * float(z_rel.abs().max()))


def test_stabilize_matches_zennit() -> None:
    z = torch.tensor([-2.0, -0.0, 0.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(stabilize(z, 0.1), zennit.core.stabilize(z, 0.1), rtol=0, atol=0)
    assert stabilize(z, 0.1)[1] == pytest.approx(0.1)  # sign(0) = +1


# ------------------------------------------------------------------------------ registry errors
def test_registry_defaults() -> None:
    expected = {"alpha": 2.0, "beta": 1.0, "epsilon": 0.1, "beta_sign": "standard"}
    assert RULES["alpha_beta"].resolve() == expected
    assert RULES["epsilon"].resolve(epsilon=0.25)["epsilon"] == 0.25


@pytest.mark.parametrize(
    ("rule", "params", "message"),
    [
        ("lrp_magic", {}, "unknown LRP rule 'lrp_magic'"),
        ("alpha_beta", {"alpha": 2.0, "beta": 0.5}, "alpha - beta = 1"),
        ("alpha_beta", {"alpha": -1.0, "beta": -2.0}, "must be >= 0"),
        ("epsilon", {"epsilon": -0.1}, "must be >= 0"),
        ("epsilon", {"epsilon": 0.0}, "must be > 0"),
        ("gamma", {"gamma": -1.0}, "must be >= 0"),
        ("epsilon", {"gamma": 0.3}, "no parameter(s) ['gamma']"),
        ("z", {"epsilon": 0.3}, "its parameters are: none"),
        ("alpha_beta", {"alpha": 0.5, "beta": 0.5, "beta_sign": "paper"}, "beta <= 0"),
        ("alpha_beta", {"beta_sign": "plus"}, "beta_sign='plus' is invalid"),
        ("epsilon", {"epsilon": "big"}, "must be a finite number"),
    ],
)
def test_bad_rules_and_parameters_raise_one_clear_error(rule: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        make_composite(rule, **params)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_paper_spelling_of_alpha_beta_converts_to_ours() -> None:
    resolved = RULES["alpha_beta"].resolve(alpha=2.0, beta=-1.0, beta_sign="paper")
    assert (resolved["alpha"], resolved["beta"]) == (2.0, 1.0)
    enc = _encoder(batch_norm=False)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    start = torch.randn(1, 512, dtype=torch.float64)
    _, ours = _ours(enc, "alpha_beta", x, start)
    leaf = x.clone().requires_grad_(True)
    paper_composite = make_composite("alpha_beta", alpha=2, beta=-1, beta_sign="paper")
    paper = run_steps(compile_sequential(enc, "e"), paper_composite, leaf)
    (rel,) = torch.autograd.grad(paper, leaf, start)
    torch.testing.assert_close(rel, ours, rtol=0, atol=0)


def test_unsupported_layers_raise_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"cannot explain encoder\.1 \(Softmax\)"):
        compile_sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1)), "encoder")
    with pytest.raises(ValueError, match="must directly follow a Conv2d/Linear"):
        compile_sequential(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)), "encoder")


@pytest.mark.parametrize("rule", ["gamma", "alpha_beta", "preset_a_flat"])
def test_sign_split_rules_with_negative_inputs_inside_the_network_equal_zennit(rule: str) -> None:
    """After a Tanh the inputs of a conv are negative too: the x- branch of the split rules is exercised."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).double()  # fmt: skip
    steps = compile_sequential(net, "net")
    assert [s.op.nonnegative_input for s in steps if s.kind == "linear"] == [False, False, True]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    start = torch.randn(2, 4, dtype=torch.float64)
    with Gradient(net, zennit_composite(rule)) as attributor:
        _, z_rel = attributor(x.clone(), attr_output=start)
    _, rel = _ours(net, rule, x, start)
    torch.testing.assert_close(rel, z_rel, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", ["alpha_beta", "gamma"])
def test_kept_weights_follow_in_place_changes(rule: str) -> None:
    """Sign-split rules keep their stacked weights and the steps their folded BatchNorm while the weights are
    unchanged; an in-place change (training, a randomisation test) is seen at the next call."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten())
    net = net.double().eval()
    steps, composite = compile_sequential(net, "n"), make_composite(rule)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def explain(steps, composite) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x.clone().requires_grad_(True)
        out = run_steps(steps, composite, leaf)
        return out.detach(), torch.autograd.grad(out, leaf, torch.ones_like(out))[0]

    before = explain(steps, composite)
    torch.testing.assert_close(explain(steps, composite)[1], before[1], rtol=0, atol=0)
    with torch.no_grad():
        net[3].weight.mul_(-1.0)
        net[1].running_mean.add_(0.3)
    out, rel = explain(steps, composite)
    fresh_out, fresh_rel = explain(compile_sequential(net, "n"), make_composite(rule))
    torch.testing.assert_close(out, net(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rel, fresh_rel, rtol=0, atol=0)
    assert not torch.allclose(rel, before[1])


@pytest.mark.parametrize(("shape", "kernel"), [((2, 3, 8, 32, 32), (2, 8, 8)), ((1, 3, 9, 35, 33), (2, 8, 8)),
                                               ((3, 3, 32, 32), (8, 8)), ((1, 3, 30, 31), (16, 16))])
def test_patch_embedding_input_grad_equals_the_convolutions_gradient(shape: tuple, kernel: tuple) -> None:
    """A convolution over non-overlapping patches (a transformer's patch / tubelet embedding) takes its input
    gradient as one matrix product: the same map as autograd's, borders the patches miss included."""
    from vidxai.xai.rules import LinearOp

    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, *kernel, dtype=torch.float64)
    op = LinearOp(f"conv{len(kernel)}d", kernel, (0,) * len(kernel), (1,) * len(kernel), 1)
    assert op.is_patchify(w)
    z = op(x, w, None)
    g = torch.randn_like(z)
    (expected,) = torch.autograd.grad(z, x, g)
    torch.testing.assert_close(op.input_grad(x.shape, w, g), expected, rtol=1e-12, atol=1e-12)
    overlapping = LinearOp(f"conv{len(kernel)}d", tuple(k // 2 for k in kernel), (0,) * len(kernel),
                           (1,) * len(kernel), 1)
    assert not overlapping.is_patchify(w)
