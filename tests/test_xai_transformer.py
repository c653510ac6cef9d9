"""LRP through the Hugging Face video transformers (VideoMAE, TimeSformer), float64, tiny random models.

Oracles: LXT 2.1's explicit functional rules (``lxt.explicit.functional``, pure torch) composed by hand on the
same weights; the ``transformers`` forward (eager and sdpa); conservation with biases zeroed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

transformers = pytest.importorskip("transformers")
lf = pytest.importorskip("lxt.explicit.functional")
lrules = pytest.importorskip("lxt.explicit.rules")

from vidxai.models.hf_stages import transformer_stages  # noqa: E402
from vidxai.xai.attention import TokenTrace, token_forward  # noqa: E402
from vidxai.xai.rules import Composite, Epsilon, Norm  # noqa: E402

EPS = 1e-12  # every stabiliser in the oracle comparisons (ours add eps*sign(z), LXT's add +eps)
T, SIZE, PATCH = 4, 16, 8


class TinyHF(nn.Module):
    """A test-only network with ``.hf`` like vidxai.models.hf_video's (forward and explain_stages)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, x: Tensor) -> Tensor:
        return self.hf(pixel_values=x).logits

    def explain_stages(self):  # noqa: ANN201
        return transformer_stages(self)


def tiny_videomae(attn: str = "eager", mean_pooling: bool = True, seed: int = 0, layers: int = 2) -> TinyHF:
    """A random float64 VideoMAE classifier: 4 frames of 16x16, tubelet 2, patch 8, 32 wide, 4 heads, 3 classes."""
    torch.manual_seed(seed)
    cfg = transformers.VideoMAEConfig(
        image_size=SIZE, patch_size=PATCH, num_frames=T, tubelet_size=2, hidden_size=32, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=64, num_labels=3, use_mean_pooling=mean_pooling, qv_bias=True,
        attn_implementation=attn,
    )
    hf = transformers.VideoMAEForVideoClassification(cfg).double().eval()
    _randomise(hf)
    return TinyHF(hf)


def tiny_timesformer(attn: str = "eager", kind: str = "divided_space_time", seed: int = 0) -> TinyHF:
    """A random float64 TimeSformer classifier (divided space-time attention by default), sizes as above."""
    torch.manual_seed(seed)
    cfg = transformers.TimesformerConfig(
        image_size=SIZE, patch_size=PATCH, num_frames=T, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3, attention_type=kind, attn_implementation=attn,
    )
    hf = transformers.TimesformerForVideoClassification(cfg).double().eval()
    _randomise(hf)
    return TinyHF(hf)


def _randomise(hf: nn.Module) -> None:
    """Non-trivial LayerNorm weights/biases, CLS token and time table (HF initialises them to ones / zeros)."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or "cls_token" in name or "time_embeddings" in name:
                p.add_(0.3 * torch.randn_like(p))


def clip(batch: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(batch, T, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def exact_composite() -> Composite:
    """Epsilon with the oracle's tiny stabiliser on every layer."""
    rule = Epsilon(EPS)
    return Composite(conv=rule, linear=rule, avgpool=Norm(EPS), residual=Norm(EPS))


def ours(
    net: TinyHF, x: Tensor, target: int, rule: str, composite: Composite | None = None, stab: float = EPS
) -> tuple[Tensor, Tensor, TokenTrace]:
    """Input relevance, logits and trace of our rules (token stage + classifier), straight from the functions."""
    tokens, head = net.explain_stages()
    trace = TokenTrace(composite or exact_composite(), rule, stab=stab)
    leaf = x.clone().requires_grad_(True)
    logits = trace.linear(token_forward(tokens.module, leaf, trace), head.module[0])
    r_out = torch.zeros_like(logits)
    r_out[:, target] = logits[:, target]
    (rel,) = torch.autograd.grad(logits, leaf, r_out.detach())
    return rel, logits.detach(), trace


# ----------------------------------------------------------------------------------------- LXT oracle
def _lin(x: Tensor, m: nn.Linear) -> Tensor:
    return lf.linear_epsilon(x, m.weight, m.bias, EPS)


def _ln(x: Tensor, m: nn.LayerNorm) -> Tensor:
    return lf.layer_norm_grad_fn.apply(x, m.weight, m.bias, m.eps, EPS)


def _gelu(x: Tensor) -> Tensor:
    return x + (F.gelu(x) - x).detach()  # identity rule


def _attention(q: Tensor, k: Tensor, v: Tensor, scale: float, rule: str) -> Tensor:
    if rule == "cp":
        with torch.no_grad():
            weights = torch.softmax((q @ k.transpose(-1, -2)) * scale, -1)
        return lrules.epsilon_lrp(torch.matmul, EPS, weights.detach(), v)
    scores = lf.mul2(lf.matmul(q, k.transpose(-1, -2), False, EPS), scale)
    return lf.matmul(lf.softmax(scores, -1), v, False, EPS)


def _heads(x: Tensor, n: int) -> Tensor:
    b, s, d = x.shape
    return x.reshape(b, s, n, d // n).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


def _mlp(layer: nn.Module, x: Tensor) -> Tensor:
    return _lin(_gelu(_lin(x, layer.intermediate.dense)), layer.output.dense)


def lxt_videomae(hf: nn.Module, x: Tensor, rule: str) -> Tensor:
    """VideoMAE's forward composed from LXT's rules."""
    body, proj = hf.videomae, hf.videomae.embeddings.patch_embeddings.projection
    conv = lambda t: F.conv3d(t, proj.weight, proj.bias, proj.stride)  # noqa: E731
    h = lrules.epsilon_lrp(conv, EPS, x.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)
    h = lf.add2(h, body.embeddings.position_embeddings.to(h), False, EPS)
    for layer in body.encoder.layer:
        att = layer.attention.attention
        y = _ln(h, layer.layernorm_before)
        q, k, v = (_heads(_lin(y, m), att.num_attention_heads) for m in (att.query, att.key, att.value))
        h = lf.add2(_lin(_merge(_attention(q, k, v, att.scaling, rule)), layer.attention.output.dense), h, False, EPS)
        h = lf.add2(_mlp(layer, _ln(h, layer.layernorm_after)), h, False, EPS)
    pooled = _ln(lf.mean(h, 1, False, EPS), hf.fc_norm)
    return _lin(pooled, hf.classifier)


def _ts_attention(module: nn.Module, x: Tensor, rule: str) -> Tensor:
    att = module.attention
    b, n, d = x.shape
    qkv = _lin(x, att.qkv).reshape(b, n, 3, att.num_heads, d // att.num_heads).permute(2, 0, 3, 1, 4)
    return _lin(_merge(_attention(qkv[0], qkv[1], qkv[2], att.scale, rule)), module.output.dense)


def _ts_layer(layer: nn.Module, h: Tensor, rule: str) -> Tensor:
    b, d, t = h.shape[0], h.shape[2], layer.config.num_frames
    n = (h.shape[1] - 1) // t
    cls, tok = h[:, :1], h[:, 1:]
    temporal = _ts_attention(layer.temporal_attention, _ln(tok.reshape(b * n, t, d), layer.temporal_layernorm), rule)
    tok = lf.add2(tok, _lin(temporal.reshape(b, n * t, d), layer.temporal_dense), False, EPS)
    spatial = tok.reshape(b, n, t, d).permute(0, 2, 1, 3).reshape(b * t, n, d)
    spatial = torch.cat((cls.repeat(1, t, 1).reshape(b * t, 1, d), spatial), 1)
    spatial = _ts_attention(layer.attention, _ln(spatial, layer.layernorm_before), rule)
    cls_out = lf.mean(spatial[:, 0].reshape(b, t, d), 1, True, EPS)
    res = spatial[:, 1:].reshape(b, t, n, d).permute(0, 2, 1, 3).reshape(b, n * t, d)
    h = lf.add2(torch.cat((cls, tok), 1), torch.cat((cls_out, res), 1), False, EPS)
    return lf.add2(h, _mlp(layer, _ln(h, layer.layernorm_after)), False, EPS)


def lxt_timesformer(hf: nn.Module, x: Tensor, rule: str) -> Tensor:
    """TimeSformer's (divided space-time) forward composed from LXT's rules."""
    emb = hf.timesformer.embeddings
    b, t = x.shape[:2]
    proj = emb.patch_embeddings.projection
    conv = lambda f: F.conv2d(f, proj.weight, proj.bias, proj.stride)  # noqa: E731
    h = lrules.epsilon_lrp(conv, EPS, x.reshape(b * t, *x.shape[2:])).flatten(2).transpose(1, 2)
    h = lf.add2(torch.cat((emb.cls_token.detach().expand(b * t, -1, -1), h), 1), emb.position_embeddings.detach(),
                False, EPS)
    cls, h = h[:b, :1], h[:, 1:]
    n, d = h.shape[1:]
    h = h.reshape(b, t, n, d).permute(0, 2, 1, 3).reshape(b * n, t, d)
    h = lf.add2(h, emb.time_embeddings.detach(), False, EPS)
    h = torch.cat((cls, h.reshape(b, n * t, d)), 1)
    for layer in hf.timesformer.encoder.layer:
        h = _ts_layer(layer, h, rule)
    return _lin(_ln(h, hf.timesformer.layernorm)[:, 0], hf.classifier)


def lxt_relevance(fn, net: TinyHF, x: Tensor, target: int, rule: str) -> Tensor:
    with torch.no_grad():  # LXT's functions read the parameters; keep them out of the graph
        params = [p for p in net.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        leaf = x.clone().requires_grad_(True)
        logits = fn(net.hf, leaf, rule)
        r_out = torch.zeros_like(logits)
        r_out[:, target] = logits[:, target]
        (rel,) = torch.autograd.grad(logits, leaf, r_out.detach())
    finally:
        for p in params:
            p.requires_grad_(True)
    return rel


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize(("build", "oracle"), [(tiny_videomae, lxt_videomae), (tiny_timesformer, lxt_timesformer)])
def test_equals_lxt_composed_rules(build, oracle, rule: str) -> None:
    net = build()
    x = clip()
    rel, logits, _ = ours(net, x, 1, rule)
    ref = lxt_relevance(oracle, net, x, 1, rule)
    torch.testing.assert_close(logits, net(x).detach(), rtol=0, atol=1e-10)
    err = ((rel - ref).abs().max() / ref.abs().max()).item()
    assert err <= 1e-6, err
    assert rel.abs().sum() > 0


def test_attention_rules_differ() -> None:
    """AttnLRP and CP-LRP are different rules (the oracle test above would pass with one rule twice otherwise)."""
    net, x = tiny_videomae(), clip()
    a, _, _ = ours(net, x, 0, "attnlrp")
    c, _, _ = ours(net, x, 0, "cp")
    assert ((a - c).abs().max() / a.abs().max()).item() > 1e-3


_BUILDS = {
    "videomae": tiny_videomae,
    "videomae_cls": lambda attn: tiny_videomae(attn, mean_pooling=False),
    "timesformer": tiny_timesformer,
    "timesformer_joint": lambda attn: tiny_timesformer(attn, kind="joint_space_time"),
}
# TimeSformer has one attention implementation (its own eager code; transformers refuses sdpa for it)
_CASES = [(k, "eager") for k in _BUILDS] + [("videomae", "sdpa"), ("videomae_cls", "sdpa")]


def test_timesformer_has_no_sdpa() -> None:
    """If transformers gains sdpa for TimeSformer, add it to _CASES."""
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        tiny_timesformer("sdpa")


@pytest.mark.parametrize(("name", "attn"), _CASES)
def test_stages_and_lrp_forward_compose_to_hf(name: str, attn: str) -> None:
    """The stages (HF modules) and our LRP forward (parameters read functionally) both give the HF logits."""
    net = _BUILDS[name](attn)
    assert net.hf.config._attn_implementation == attn
    x = clip()
    ref = net(x).detach()
    tokens, head = net.explain_stages()
    torch.testing.assert_close(head.module(tokens.module(x)).detach(), ref, rtol=0, atol=1e-10)
    for rule in ("attnlrp", "cp"):
        _, logits, _ = ours(net, x, 0, rule)
        torch.testing.assert_close(logits, ref, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------- conservation
def _zero_biases(net: TinyHF, constants: bool) -> TinyHF:
    """Zero every bias (Linear, Conv, LayerNorm); with ``constants`` also the position / time tables and CLS."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".bias") or (constants and any(k in name for k in ("cls_token", "embeddings.position",
                                                                                 "time_embeddings"))):
                p.zero_()
    if constants and hasattr(net.hf, "videomae"):
        emb = net.hf.videomae.embeddings
        emb.position_embeddings = torch.zeros_like(emb.position_embeddings)
    return net


def _conservation(net: TinyHF, rule: str, target: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample input relevance sum, the relevance the constants absorbed (whole batch), per sample target logit."""
    x = clip()
    rel, logits, _ = ours(net, x, target, rule)
    return rel.flatten(1).sum(1), _absorbed(net, x, target, rule), logits[:, target]


def _absorbed(net: TinyHF, x: Tensor, target: int, rule: str) -> Tensor:
    tokens, head = net.explain_stages()
    trace = TokenTrace(exact_composite(), rule, stab=EPS)
    logits = trace.linear(token_forward(tokens.module, x, trace), head.module[0])
    r_out = torch.zeros_like(logits)
    r_out[:, target] = logits[:, target]
    grads = torch.autograd.grad(logits, list(trace.constants.values()), r_out.detach())
    return sum(g.sum() for g in grads)


@pytest.mark.parametrize("build", [tiny_videomae, tiny_timesformer])
def test_cp_conserves_with_biases_and_constants_zeroed(build) -> None:
    total, _, logit = _conservation(_zero_biases(build(), constants=True), "cp")
    torch.testing.assert_close(total, logit, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("build", [tiny_videomae, tiny_timesformer])
def test_constants_absorb_the_rest(build) -> None:
    """Biases zeroed, position tables / CLS token kept: the input plus what the constants absorb is the logit."""
    total, absorbed, logit = _conservation(_zero_biases(build(), constants=False), "cp")
    torch.testing.assert_close(total.sum() + absorbed, logit.sum(), rtol=1e-8, atol=1e-10)
    assert absorbed.abs() > 1e-3 * logit.abs().sum()  # they do take a share


@pytest.mark.parametrize("build", [tiny_videomae, tiny_timesformer])
def test_attnlrp_softmax_does_not_conserve(build) -> None:
    """AttnLRP's softmax rule changes the relevance sum (documented in vidxai.xai.attention); everything else
    conserves, so the gap is the softmax's alone. The gap is measured, not bounded (it depends on the scores)."""
    total, _, logit = _conservation(_zero_biases(build(), constants=True), "attnlrp")
    gap = ((total - logit).abs() / logit.abs()).max().item()
    assert gap > 1e-6, gap


# ----------------------------------------------------------------------------------------- through VideoLRP
@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize("build", [tiny_videomae, tiny_timesformer])
def test_videolrp_on_transformers(build, rule: str) -> None:
    """The explainer (LRPConfig -> VideoLRP, stage propagators, head) computes what the rule functions compute
    (whose equality to LXT is tested above with matched stabilisers)."""
    from vidxai.xai.config import LRPConfig
    from vidxai.xai.rules import STABILIZER, make_composite

    net, x = build(), clip()
    explainer = LRPConfig(rule="z", attention_rule=rule).build(net)
    rel, delta = explainer.attribute(x, target=1, return_convergence_delta=True)
    ref, _, _ = ours(net, x, 1, rule, make_composite("z"), STABILIZER)
    torch.testing.assert_close(rel, ref, rtol=1e-12, atol=1e-15)
    logit = net(x)[:, 1].detach()
    torch.testing.assert_close(delta, rel.flatten(1).sum(1) - logit)
    exp = explainer.explain(x[0], target=1)
    torch.testing.assert_close(exp.relevance, rel[0])
    steps = T // 2 if build is tiny_videomae else T
    assert exp.feature.shape == (steps, 32)


@pytest.mark.parametrize("build", [tiny_videomae, tiny_timesformer])
def test_videolrp_reports_the_constants(build) -> None:
    """Biases zeroed, CP: pixels plus the constants' shares (Explanation.initial_state) are the target logit."""
    from vidxai.xai import VideoLRP

    net = _zero_biases(build(), constants=False)
    x = clip(batch=1)
    exp = VideoLRP(net, "z", attention_rule="cp").explain(x[0], target=0)
    names = {"position_l0"} | ({"cls_token_l0", "time_l0"} if build is tiny_timesformer else set())
    assert names <= set(exp.initial_state)
    absorbed = sum(float(exp.initial_state[n].sum()) for n in names)
    assert abs(exp.total() + absorbed - float(exp.logits[0])) < 1e-4 * abs(float(exp.logits[0]))  # stabilisers 1e-6
    assert abs(absorbed) > 1e-3 * abs(float(exp.logits[0]))


def test_attention_rule_needs_attention() -> None:
    from vidxai.errors import ConfigError
    from vidxai.models.r2plus1d import R2Plus1D
    from vidxai.xai import VideoLRP
    from vidxai.xai.config import LRPConfig

    net = R2Plus1D(num_classes=3, width=0.25)
    with pytest.raises(ConfigError, match="attention_rule='cp' does not apply to R2Plus1D: it has no attention"):
        LRPConfig(attention_rule="cp").build(net)
    with pytest.raises(ConfigError, match="unknown attention_rule"):
        VideoLRP(tiny_videomae(), attention_rule="softmax")
    VideoLRP(net)  # unset: fine


def test_layer_norm_in_a_head_is_a_registered_layer() -> None:
    """nn.LayerNorm through the layer registry (a head with LayerNorm + Linear): equal to LXT's layer_norm."""
    from vidxai.xai.cnn import compile_sequential, run_steps

    torch.manual_seed(0)
    head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 3)).double()
    with torch.no_grad():
        head[0].weight.add_(torch.randn(8, dtype=torch.float64))
        head[0].bias.add_(torch.randn(8, dtype=torch.float64))
    x = torch.randn(2, 8, dtype=torch.float64)
    steps = compile_sequential(head, "head")
    assert [s.kind for s in steps] == ["layernorm", "linear"]
    leaf = x.clone().requires_grad_(True)
    out = run_steps(steps, exact_composite(), leaf)
    (ours_r,) = torch.autograd.grad(out, leaf, out.detach())
    for p in head.parameters():
        p.requires_grad_(False)
    leaf = x.clone().requires_grad_(True)
    ref_out = _lin(_ln(leaf, head[0]), head[1])
    (ref,) = torch.autograd.grad(ref_out, leaf, ref_out.detach())
    torch.testing.assert_close(ours_r, ref, rtol=1e-8, atol=1e-12)


def test_gamma_rule_on_the_transformer_linears() -> None:
    """rule=gamma applies gamma to the blocks' Linear layers and the tubelet conv: gamma=0 is the epsilon rule
    with the same stabiliser (1e-6); gamma=0.25 is not."""
    from vidxai.xai import VideoLRP

    net, x = tiny_videomae(), clip(batch=1)
    eps = VideoLRP(net, "epsilon", epsilon=1e-6).attribute(x, target=0)
    gamma0 = VideoLRP(net, "gamma", gamma=0.0, epsilon=1e-6).attribute(x, target=0)
    gamma = VideoLRP(net, "gamma", gamma=0.25, epsilon=1e-6).attribute(x, target=0)
    torch.testing.assert_close(gamma0, eps, rtol=1e-8, atol=1e-12)
    assert ((gamma - eps).abs().max() / eps.abs().max()).item() > 1e-2


def test_fused_mlp_activation_equals_the_two_steps() -> None:
    """TokenTrace.activated_linear (GELU + linear in one Function that recomputes the GELU in the backward) gives
    the relevance of the two separate steps, which an activation rule other than Pass takes, bit for bit."""
    import dataclasses

    from vidxai.xai.rules import Pass

    class OtherPass(Pass):  # the same rule, another type: activated_linear takes the two-step path
        pass

    two_steps = dataclasses.replace(exact_composite(), activation=OtherPass())
    for build in (tiny_videomae, tiny_timesformer):
        net, x = build(), clip()
        fused, _, _ = ours(net, x, 1, "attnlrp")
        plain, _, _ = ours(net, x, 1, "attnlrp", composite=two_steps)
        assert torch.equal(fused, plain)
        assert fused.abs().sum() > 0
