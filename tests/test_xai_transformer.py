"""LRP through the five ``transformers`` video classifiers by their own forward (:mod:`vidxai.xai.engine`),
float64, tiny random models.

Oracles: (a) LXT 2.1's explicit functional rules (``lxt.explicit``) composed by hand on the same weights
(VideoMAE, TimeSformer); (b) Gradient x Input of the real ``transformers`` forward with LXT's efficient rules
(``lxt.efficient.rules``: ``divide_gradient`` on queries / keys / values, ``stop_gradient`` on the standard
deviation of every LayerNorm, ``identity_rule_implicit`` on every activation and on VideoPrism's soft cap,
``stop_gradient`` on the attention weights for CP-LRP) set up here, for every architecture; the logits under the
rules equal the plain forward; conservation with biases zeroed (CP-LRP); the model is left exactly as it was.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

transformers = pytest.importorskip("transformers")
lf = pytest.importorskip("lxt.explicit.functional")
lrules = pytest.importorskip("lxt.explicit.rules")

def _lxt_efficient_rules() -> types.ModuleType:
    """``lxt/efficient/rules.py`` (pure torch) loaded on its own: LXT 2.1's ``lxt.efficient`` package imports its
    BERT patches on import, which transformers 5 no longer supports."""
    import importlib.util
    from pathlib import Path

    lxt = pytest.importorskip("lxt")
    spec = importlib.util.spec_from_file_location("lxt_efficient_rules", Path(lxt.__file__).parent / "efficient" /
                                                  "rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


erules = _lxt_efficient_rules()

from vidxai.errors import ConfigError  # noqa: E402
from vidxai.models import build_network  # noqa: E402
from vidxai.models.hf_stages import model_stages, transformer_stages  # noqa: E402
from vidxai.xai.engine import ATTN_IMPLEMENTATION, EnginePropagator, Recorder  # noqa: E402
from vidxai.xai.propagators import PropagatorContext  # noqa: E402
from vidxai.xai.rules import Composite, Epsilon, Norm, stabilize  # noqa: E402

EPS = 1e-12  # every stabiliser in the oracle comparisons (ours add eps*sign(z), LXT's add +eps)
T, SIZE, PATCH = 4, 16, 8
ARCHS = ("videomae", "timesformer", "vivit", "vjepa2", "videoprism")
RULES = ("attnlrp", "cp")


class TinyHF(nn.Module):
    """A test-only network with ``.hf`` like vidxai.models.hf_video's (forward and explain_stages)."""

    def __init__(self, hf: nn.Module, input_name: str = "pixel_values") -> None:
        super().__init__()
        self.hf, self.input_name = hf, input_name

    def forward(self, x: Tensor) -> Tensor:
        return self.hf(**{self.input_name: x}).logits.reshape(x.shape[0], -1)

    def explain_stages(self):  # noqa: ANN201
        return transformer_stages(self)


def _randomise(hf: nn.Module) -> None:
    """Non-trivial norm weights / biases, CLS / query tokens and position tables (some start at ones / zeros)."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if any(k in name for k in ("norm", "cls_token", "time_embeddings", "position_embeddings", "query",
                                       "per_dim_scale")):
                p.add_(0.3 * torch.randn_like(p))


def tiny(arch: str, seed: int = 0, layers: int = 2, **over) -> nn.Module:
    """A random float64 vidxai network of ``arch``: 4 frames of 16x16, patch 8, 32 wide, 4 heads, 3 classes."""
    torch.manual_seed(seed)
    kw = dict(num_frames=T, image_size=SIZE, patch_size=PATCH, hidden_size=32, num_layers=layers, num_heads=4,
              intermediate_size=64)
    if arch != "timesformer":
        kw["tubelet_size"] = 1 if arch == "videoprism" else 2
    net = build_network(arch, 3, **{**kw, **over}).double().eval()
    _randomise(net.hf)
    return net


def tiny_videomae(attn: str = "eager", mean_pooling: bool = True, seed: int = 0, layers: int = 2) -> TinyHF:
    """A random float64 VideoMAE classifier (transformers' own class; first-token pooling with mean_pooling=False)."""
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


#: every architecture, plus transformers' variants the rules must also follow
BUILDS = {
    **{a: (lambda a=a: tiny(a)) for a in ARCHS},
    "videomae_first_token": lambda: tiny_videomae(mean_pooling=False),
    "timesformer_joint": lambda: tiny_timesformer(kind="joint_space_time"),
}


def clip(batch: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(batch, T, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def exact_composite() -> Composite:
    """Epsilon with the oracle's tiny stabiliser on every layer."""
    rule = Epsilon(EPS)
    return Composite(conv=rule, linear=rule, avgpool=Norm(EPS), residual=Norm(EPS))


def ours(net: nn.Module, x: Tensor, target: int, rule: str, composite: Composite | None = None
         ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Input relevance, logits and the constants' shares: the engine on the tokens stage, the epsilon rule on the
    classifier written out here (so the VideoLRP wiring is tested on its own below)."""
    tokens, head = net.explain_stages()
    composite = composite or exact_composite()
    prop = EnginePropagator(tokens, PropagatorContext(composite, attention_rule=rule))
    pooled, ctx = prop.forward(x)
    lin = head.module[0]
    logits = F.linear(pooled, lin.weight, lin.bias).detach()
    r_out = torch.zeros_like(logits)
    r_out[:, target] = logits[:, target]
    r_pooled = pooled * ((r_out / stabilize(logits, composite.linear.epsilon)) @ lin.weight.detach())
    res = prop.relevance(ctx, r_pooled)
    return res.input, logits, {k: v[0] for k, v in res.initial.items()}


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


def lxt_relevance(fn, net: nn.Module, x: Tensor, target: int, rule: str) -> Tensor:
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



# ----------------------------------------------------------------------------------------- GxI oracle (LXT efficient)
def _oracle_attention(rule: str):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kw):  # noqa: ANN001, ANN202
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        if rule == "attnlrp":  # uniform rule on q k^T (a product of two tracked operands only) and on A V
            if query.requires_grad and key.requires_grad:
                query, key = erules.divide_gradient(query, 4), erules.divide_gradient(key, 4)
            elif key.requires_grad:  # a learned query (pooling head): q k^T is linear in k
                key = erules.divide_gradient(key, 2)
            value = erules.divide_gradient(value, 2)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if softcap is not None:
            scores = erules.identity_rule_implicit(lambda s: torch.tanh(s / softcap) * softcap, scores)
        probs = torch.softmax(scores, dim=-1)
        if rule == "cp":
            probs = erules.stop_gradient(probs)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    return attention


def _oracle_layer_norm(x, shape, weight=None, bias=None, eps=1e-5):  # noqa: ANN001, ANN202
    """LXT's ``lxt.efficient.patches.layer_norm_forward``: the standard deviation through ``stop_gradient``."""
    mean = x.mean(dim=-1, keepdim=True)
    std = (((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps).sqrt()
    y = (x - mean) / erules.stop_gradient(std)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def gxi_oracle(net: nn.Module, x: Tensor, target: int, rule: str, monkeypatch) -> Tensor:  # noqa: ANN001
    """Gradient x Input of the real transformers forward with LXT's efficient rules (set up with monkeypatch)."""
    attention = _oracle_attention(rule)
    transformers.AttentionInterface.register("lxt_oracle", attention)
    for module in net.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            monkeypatch.setattr(config, "_attn_implementation_internal", "lxt_oracle")
        if type(module).__module__ == "transformers.activations":
            monkeypatch.setattr(module, "forward", lambda t, f=module.forward: erules.identity_rule_implicit(f, t))
    from transformers.models.timesformer import modeling_timesformer as ts

    def ts_attention(self, hidden_states, output_attentions=False):  # noqa: ANN001, ANN202
        b, n, c = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out, probs = attention(self, qkv[0], qkv[1], qkv[2], None, scaling=self.scale)
        return (out.reshape(b, n, c), probs) if output_attentions else (out.reshape(b, n, c),)

    monkeypatch.setattr(ts.TimesformerSelfAttention, "forward", ts_attention)
    monkeypatch.setattr(torch.nn.functional, "layer_norm", _oracle_layer_norm)
    for p in net.parameters():
        monkeypatch.setattr(p, "requires_grad", False)
    leaf = x.clone().requires_grad_(True)
    logits = net(leaf)
    (grad,) = torch.autograd.grad(logits[:, target].sum(), leaf)
    return leaf.detach() * grad


# ----------------------------------------------------------------------------------------- oracles
def _rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_equals_lxt_gradient_x_input_on_the_transformers_forward(name: str, rule: str, monkeypatch) -> None:
    net, x = BUILDS[name](), clip()
    rel, _, _ = ours(net, x, 1, rule)
    ref = gxi_oracle(net, x, 1, rule, monkeypatch)
    assert rel.abs().sum() > 0
    assert _rel_err(rel, ref) <= 1e-6, _rel_err(rel, ref)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("build", "oracle"), [(tiny_videomae, lxt_videomae), (tiny_timesformer, lxt_timesformer)])
def test_equals_lxt_composed_rules(build, oracle, rule: str) -> None:
    net, x = build(), clip()
    rel, logits, _ = ours(net, x, 1, rule)
    ref = lxt_relevance(oracle, net, x, 1, rule)
    torch.testing.assert_close(logits, net(x).detach(), rtol=0, atol=1e-10)
    assert _rel_err(rel, ref) <= 1e-6, _rel_err(rel, ref)


def test_attention_rules_differ() -> None:
    """AttnLRP and CP-LRP are different rules (the oracle tests would pass with one rule twice otherwise)."""
    for arch in ARCHS:
        net, x = tiny(arch), clip()
        a, _, _ = ours(net, x, 0, "attnlrp")
        c, _, _ = ours(net, x, 0, "cp")
        assert _rel_err(a, c) > 1e-3, arch


def _plain_logits(name: str, net: nn.Module, x: Tensor) -> Tensor:
    """The plain forward in float64 throughout: sdpa where transformers has it (its eager ViViT / V-JEPA 2 /
    VideoPrism take the softmax in float32), else vidxai's explicit attention without rules (VideoPrism)."""
    hf = net.hf
    if name in ("vivit", "vjepa2", "videomae", "videomae_first_token"):
        hf.config._attn_implementation = "sdpa"
        return net(x).detach()
    if name == "videoprism":
        recorder = Recorder(hf, None)
        return recorder.run(lambda: net(x)).detach()
    return net(x).detach()


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_logits_under_the_rules_equal_the_plain_forward(name: str) -> None:
    net, x = BUILDS[name](), clip()
    tokens, head = net.explain_stages()
    torch.testing.assert_close(head.module(tokens.module(x)).detach(), net(x).detach(), rtol=0, atol=1e-12)
    for rule in RULES:
        _, logits, _ = ours(net, x, 0, rule)
        torch.testing.assert_close(logits, _plain_logits(name, net, x), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------- conservation
def _zero_biases(net: nn.Module) -> nn.Module:
    """Zero every bias (Linear, Conv, LayerNorm)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    return net


def _budget(name: str, rule: str) -> tuple[Tensor, Tensor, Tensor]:
    """Biases zeroed: per sample, the input relevance, the constants' shares and the target logit."""
    net, x = _zero_biases(BUILDS[name]()), clip(batch=1)  # one clip: a table without batch dimension is its own
    rel, logits, absorbed = ours(net, x, 2, rule)
    shares = sum((v.flatten(1).sum(1) for v in absorbed.values()), torch.zeros(x.shape[0], dtype=x.dtype))
    return rel.flatten(1).sum(1), shares, logits[:, 2]


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_cp_conserves_with_biases_zeroed(name: str) -> None:
    """CP-LRP, biases zeroed: the pixels plus the shares the constants absorbed (position tables, CLS token) are the
    target logit; the constants do take a share (where there are any)."""
    total, shares, logit = _budget(name, "cp")
    torch.testing.assert_close(total + shares, logit, rtol=1e-8, atol=1e-10)


#: sum(R_input + constants) / logit of AttnLRP, biases zeroed (measured; docs/lrp_attention.md)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_attnlrp_softmax_does_not_conserve(name: str) -> None:
    """AttnLRP's softmax rule changes the relevance sum (everything else conserves, as the CP test shows)."""
    total, shares, logit = _budget(name, "attnlrp")
    ratio = (total + shares) / logit
    assert ((ratio - 1).abs() > 1e-6).any(), ratio


# ----------------------------------------------------------------------------------------- through VideoLRP
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("arch", ARCHS)
def test_videolrp_on_transformers(arch: str, rule: str) -> None:
    """The explainer (LRPConfig -> VideoLRP, stage propagators, head) computes what the engine computes."""
    from vidxai.xai.config import LRPConfig
    from vidxai.xai.rules import make_composite

    net, x = tiny(arch), clip()
    explainer = LRPConfig(rule="z", attention_rule=rule).build(net)
    rel, delta = explainer.attribute(x, target=1, return_convergence_delta=True)
    composite = make_composite("z")
    ref, _, _ = ours(net, x, 1, rule, composite)
    torch.testing.assert_close(rel, ref, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(delta, rel.flatten(1).sum(1) - net(x)[:, 1].detach())
    exp = explainer.explain(x[0], target=1)
    torch.testing.assert_close(exp.relevance, rel[0])
    assert exp.feature.shape[-1] == 32 and exp.feature.abs().sum() > 0
    assert exp.initial_state and all(v.ndim >= 1 for v in exp.initial_state.values())


def test_videolrp_reports_the_constants() -> None:
    """Where the constants' relevance goes, by name (Explanation.initial_state)."""
    from vidxai.xai import VideoLRP

    expected = {"videomae": {"position_embeddings_l0"}, "vivit": {"cls_token_l0", "position_embeddings_l0"},
                "timesformer": {"cls_token_l0", "position_embeddings_l0", "time_embeddings_l0"},
                "vjepa2": {"query_tokens_l0"},
                "videoprism": {"position_embeddings_l0", "temporal_embeddings_position_embeddings_l0"}}
    for arch, names in expected.items():
        exp = VideoLRP(tiny(arch), "z", attention_rule="cp").explain(clip(1)[0], target=0)
        assert set(exp.initial_state) == names, (arch, sorted(exp.initial_state))


# ----------------------------------------------------------------------------------------- the model is untouched
def _state(net: nn.Module) -> tuple:
    configs = {id(m.config): m.config._attn_implementation for m in net.modules() if hasattr(m, "config")}
    forwards = [m.__dict__.get("forward") for m in net.modules()]
    return ({k: v.clone() for k, v in net.state_dict().items()}, [p.requires_grad for p in net.parameters()],
            configs, forwards, [m.training for m in net.modules()])


def _same(a: tuple, b: tuple) -> None:
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1:] == b[1:]


def test_the_model_is_left_as_it_was_also_when_explaining_raises(monkeypatch) -> None:
    from vidxai.xai import VideoLRP

    net, x = tiny("vivit"), clip()
    before = _state(net)
    a = VideoLRP(net, "epsilon", attention_rule="attnlrp").attribute(x, 0)
    _same(before, _state(net))
    # two explainers with different rules, one after the other, on one model object
    c = VideoLRP(net, "gamma", attention_rule="cp").attribute(x, 0)
    a2 = VideoLRP(net, "epsilon", attention_rule="attnlrp").attribute(x, 0)
    assert torch.equal(a, a2) and not torch.allclose(a, c)
    _same(before, _state(net))

    layer = net.hf.vivit.layers[1]

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("boom")

    monkeypatch.setattr(layer.attention, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        VideoLRP(net, attention_rule="cp").attribute(x, 0)
    monkeypatch.undo()
    _same(before, _state(net))
    assert net.hf.config._attn_implementation == "sdpa"  # the default of ViViT, restored


def test_an_uncovered_function_is_one_error_naming_it() -> None:
    """A forward that applies exp to the tokens: one ConfigError naming exp, no map."""
    from vidxai.xai import VideoLRP

    net = tiny("videomae", layers=1)
    layer = net.hf.videomae.encoder.layer[0]
    inner = layer.intermediate.dense

    class ExpDense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, h: Tensor) -> Tensor:
            return torch.exp(self.inner(h))

    layer.intermediate.dense = ExpDense()
    with pytest.raises(ConfigError, match=r"calls exp on a tensor derived from the input"):
        VideoLRP(net).attribute(clip(), 0)


@pytest.mark.parametrize("shape_a, shape_b",
                         [((2, 3, 4, 5), (3, 5, 6)), ((4, 5), (2, 5, 6)), ((2, 1, 4, 5), (1, 3, 5, 6))])
def test_a_product_of_two_derived_tensors_halves_each_gradient(shape_a, shape_b) -> None:
    """The uniform rule of ``a @ b`` (both derived from the input): the product's value, half of each operand's
    gradient, also for broadcast batch dimensions and for operands that are transposed views (kept as given)."""
    from vidxai.xai.engine import _Product

    torch.manual_seed(0)
    a = torch.randn(*shape_a[:-2], shape_a[-1], shape_a[-2], dtype=torch.float64).mT.requires_grad_(True)
    b = torch.randn(*shape_b, dtype=torch.float64, requires_grad=True)
    out, ref = _Product.apply(a, b), torch.matmul(a, b)
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    got, want = torch.autograd.grad(out, (a, b), g), torch.autograd.grad(ref, (a, b), g)
    for x, y, t in zip(got, want, (a, b)):
        assert x.shape == t.shape
        torch.testing.assert_close(x, 0.5 * y, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------- a transformer of one's own
class _Config(transformers.PretrainedConfig):
    model_type = "tiny_own_video"


class _OwnAttention(nn.Module):
    def __init__(self, config: _Config, dim: int, heads: int) -> None:
        super().__init__()
        self.config, self.heads = config, heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, h: Tensor) -> Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, None)
        out, _ = fn(self, q, k, v, None, scaling=(d // self.heads) ** -0.5)
        return self.out(out.reshape(b, n, d))


class OwnVideoTransformer(nn.Module):
    """Standard modules and transformers' attention interface: Conv3d tubelets, a learned position table, pre-norm
    blocks with SiLU MLPs, mean pooling, LayerNorm, classifier. Nothing in vidxai knows it."""

    def __init__(self, dim: int = 16, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.config = _Config()
        self.config._attn_implementation = "sdpa"
        self.embed = nn.Conv3d(3, dim, (2, 8, 8), (2, 8, 8))
        self.pos = nn.Parameter(0.5 * torch.randn(1, (T // 2) * (SIZE // 8) ** 2, dim))
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.ModuleDict(dict(n1=nn.LayerNorm(dim), att=_OwnAttention(self.config, dim, heads),
                                                  n2=nn.LayerNorm(dim), mlp=nn.Sequential(
                                                      nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim)))))
        self.norm, self.classifier = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x.transpose(1, 2)).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            h = h + blk["att"](blk["n1"](h))
            h = h + blk["mlp"](blk["n2"](h))
        return self.classifier(self.norm(h.mean(1)))

    def explain_stages(self):  # noqa: ANN201
        return model_stages(self)


@pytest.mark.parametrize("rule", RULES)
def test_a_transformer_of_ones_own(rule: str, monkeypatch) -> None:
    from vidxai.xai import VideoLRP

    torch.manual_seed(0)
    net, x = OwnVideoTransformer().double().eval(), clip()
    rel, _, _ = ours(net, x, 1, rule)
    assert _rel_err(VideoLRP(net, "z", attention_rule=rule).attribute(x, 1), rel) < 1e-3  # its stabilisers: 1e-6
    assert net.config._attn_implementation == "sdpa"  # restored
    for m in net.modules():  # the oracle: LXT's efficient rules; SiLU by the identity rule
        if isinstance(m, nn.SiLU):
            monkeypatch.setattr(m, "forward", lambda t, f=m.forward: erules.identity_rule_implicit(f, t))
    ref = gxi_oracle(net, x, 1, rule, monkeypatch)
    assert _rel_err(rel, ref) <= 1e-6, _rel_err(rel, ref)


# ----------------------------------------------------------------------------------------- transformers versions
#: per architecture: how many attention maps one forward of the tiny model computes (2 blocks; TimeSformer two per
#: block; V-JEPA 2's pooler one self- and one cross-attention; VideoPrism 2 spatial + 2 temporal + its pooling head)
ATTENTIONS = {"videomae": 2, "timesformer": 4, "vivit": 2, "vjepa2": 4, "videoprism": 5}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_installed_transformers_computes_what_the_rules_rely_on(arch: str) -> None:
    """The rules rely on each forward computing attention through transformers' attention interface (or its own
    explicit softmax: TimeSformer), LayerNorm through F.layer_norm and activations as transformers.activations
    modules. A transformers version that changes that fails here, with the reason."""
    net, x = tiny(arch), clip(1)
    recorder = Recorder(net.hf, None)
    logits = recorder.run(lambda: net(x))
    msg = (f"transformers {transformers.__version__} changed how {arch} computes attention (expected "
           f"{ATTENTIONS[arch]} maps through the '{ATTN_IMPLEMENTATION}' attention interface / softmax, got "
           f"{len(recorder.record.attentions)}): check vidxai/xai/engine.py against it and the tested range in "
           "pyproject.toml")
    assert len(recorder.record.attentions) == ATTENTIONS[arch], msg
    torch.testing.assert_close(logits, _plain_logits(arch, net, x), rtol=0, atol=1e-10, msg=msg)
    acts = [m for m in net.modules() if type(m).__module__ == "transformers.activations"]
    assert acts, f"transformers {transformers.__version__}: {arch} no longer uses transformers.activations modules"


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


