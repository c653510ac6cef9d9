"""torchvision's attention video models (MViT v1 / v2, Swin3D) through the same engine as the transformers:
tiny random builds, float64; their own forward under the rules (:mod:`vidxai.xai.engine`).

Oracle: Gradient x Input of torchvision's real forward with LXT's efficient rules (``lxt/efficient/rules.py``)
set up here by patching the torch functions that forward calls, as LXT patches the models it ships:
``divide_gradient`` on both operands of every product of two input-derived tensors (``q k^T``, ``A V``: the
uniform rule), ``stop_gradient`` on the softmax output for CP-LRP, LXT's LayerNorm (the standard deviation
through ``stop_gradient``) and LXT's identity rule on every GELU module (its stabiliser set to 1e-12, like every
other). Nothing of vidxai's engine is used for it. Also checked on torchvision's own builders (full depth, small
clips)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

mvit = pytest.importorskip("torchvision.models.video.mvit")
swin = pytest.importorskip("torchvision.models.video.swin_transformer")

from test_xai_transformer import EPS, _oracle_layer_norm, _rel_err, erules, ours  # noqa: E402

from vidxai.models.hf_stages import model_stages  # noqa: E402
from vidxai.xai import VideoLRP  # noqa: E402
from vidxai.xai.engine import supports  # noqa: E402

T, SIZE = 4, 32


def _mvit(v2: bool) -> nn.Module:
    """Two multiscale blocks (the second pools queries 2x in space), v2: relative positions, residual pooling."""
    blocks = [mvit.MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                                 kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, i, o, sq, skv in ((1, 16, 16, [1, 1, 1], [1, 2, 2]), (2, 16, 32, [1, 2, 2], [1, 1, 1]))]
    return mvit.MViT(spatial_size=(SIZE, SIZE), temporal_size=T, block_setting=blocks, residual_pool=v2,
                     residual_with_cls_embed=not v2, rel_pos_embed=v2, proj_after_attn=v2, num_classes=3)


def _swin() -> nn.Module:
    """Two stages, patch merging between them; the first has two blocks, the second of which shifts its windows
    (tokens 2 x 8 x 8, windows 2 x 4 x 4: shifted by 2 in height and width, with the attention mask)."""
    return swin.SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 1], num_heads=[2, 2],
                                  window_size=[2, 4, 4], num_classes=3)


BUILDS = {"mvit_v1": lambda: _mvit(False), "mvit_v2": lambda: _mvit(True), "swin3d": _swin}


class Clips(nn.Module):
    """A torchvision video model behind vidxai's (B, T, C, H, W) clips."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.transpose(1, 2))

    def explain_stages(self):  # noqa: ANN201
        return model_stages(self.model, channels_first=True)


def _net(name: str) -> Clips:
    torch.manual_seed(0)
    model = BUILDS[name]().double().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "pos" in n or "cls" in n:
                p.add_(0.3 * torch.randn_like(p))
    return Clips(model)


def _clip(batch: int = 2) -> Tensor:
    return torch.randn(batch, T, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_supported_and_the_stages_compose_to_the_forward(name: str) -> None:
    net, x = _net(name), _clip()
    assert supports(net.model) and not supports(net)
    tokens, head = net.explain_stages()
    torch.testing.assert_close(head.module(tokens.module(x)), net(x), rtol=0, atol=1e-12)


def _zero_biases(net: Clips) -> Clips:
    """Every bias zeroed but Swin3D's relative position bias table (a constant of the scores)."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(".bias") and "relative_position" not in n:
                p.zero_()
    return net


def _budget(net: Clips, x: Tensor, rule: str, target: int = 2) -> tuple[float, float]:
    """(pixels + the constants' shares, the target logit) of one clip; every stabiliser 1e-12."""
    rel, logits, shares = ours(net, x, target, rule)
    assert rel.abs().sum() > 0
    return (rel.sum() + sum(v.sum() for v in shares.values())).item(), logits[0, target].item()


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_cp_conserves_with_biases_zeroed_attnlrp_does_not(name: str) -> None:
    """Biases zeroed: CP-LRP's pixels plus the constants' shares (position tables, CLS token, relative position
    bias, shifted-window mask) are the target logit; AttnLRP's softmax rule changes the sum (next test)."""
    net, x = _zero_biases(_net(name)), _clip(1)
    ratios = {rule: (lambda total, logit: total / logit)(*_budget(net, x, rule)) for rule in ("cp", "attnlrp")}
    assert abs(ratios["cp"] - 1) < 1e-8, ratios
    assert abs(ratios["attnlrp"] - 1) > 1e-6, ratios


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_attnlrp_changes_the_sum_only_at_the_softmax(name: str, monkeypatch) -> None:
    """Biases zeroed: AttnLRP's (pixels + constants) - logit is exactly the sum over the softmaxes of what the
    softmax rule adds, ``sum(s dL/ds) - sum(A dL/dA)`` (measured in the oracle): every other rule conserves (MViT
    v2's relative positions added to the scores and its residual pooling, Swin3D's relative position bias and
    shifted-window mask, the uniform rule, LayerNorm), so nothing is counted twice."""
    net, x = _zero_biases(_net(name)), _clip(1)
    total, logit = _budget(net, x, "attnlrp")
    deviations: list[float] = []
    tv_oracle(net, x, 2, "attnlrp", monkeypatch, deviations)
    attentions = (mvit.MultiscaleAttention, swin.ShiftedWindowAttention3d)
    assert len(deviations) == sum(isinstance(m, attentions) for m in net.modules())  # one softmax per attention
    assert abs(sum(deviations)) > 1e-6 * abs(logit)
    assert abs(total - logit - sum(deviations)) <= 1e-6 * abs(sum(deviations)), (total - logit, sum(deviations))


def test_the_builds_run_what_the_oracle_must_cover(monkeypatch) -> None:
    """Swin3D: a shifted-window block (torch.roll there and back) and the patch merging run; MViT v2: relative
    positions and residual pooling, with queries pooled (the relative positions between unequal grids)."""
    rolls, merges = [], []
    monkeypatch.setattr(torch, "roll", lambda *a, f=torch.roll, **k: rolls.append(k.get("shifts")) or f(*a, **k))
    net = _net("swin3d")
    merging = [m for m in net.modules() if isinstance(m, swin.PatchMerging)]
    assert len(merging) == 1
    merging[0].register_forward_hook(lambda *args: merges.append(1))
    net(_clip(1))
    assert rolls == [(0, -2, -2), (0, 2, 2)] and merges == [1], (rolls, merges)
    v2 = _net("mvit_v2").model
    attn = [b.attn for b in v2.blocks]
    assert all(a.rel_pos_h is not None and a.residual_pool for a in attn) and attn[1].pool_q is not None


def test_attention_rules_differ_on_torchvision() -> None:
    net, x = _net("swin3d"), _clip()
    a = VideoLRP(net, attention_rule="attnlrp").attribute(x, 0)
    c = VideoLRP(net, attention_rule="cp").attribute(x, 0)
    assert ((a - c).abs().max() / a.abs().max()).item() > 1e-4


# ----------------------------------------------------------------------------------------- GxI oracle (LXT efficient)
def _uniform_product(fn):  # noqa: ANN001, ANN202
    """A product with LXT's uniform rule when both operands derive from the input (``divide_gradient`` by 2)."""
    def product(a, b, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.requires_grad and b.requires_grad:
            a, b = erules.divide_gradient(a, 2), erules.divide_gradient(b, 2)
        return fn(a, b, *args, **kwargs)

    return product


def _attention_weights(rule: str, softmaxes: list):  # noqa: ANN202
    """``Tensor.softmax`` (``F.softmax`` calls it): its own gradient (AttnLRP's rule in Gradient x Input form), held
    constant for CP-LRP; each (scores, weights) pair of AttnLRP is kept in ``softmaxes``."""
    fn = torch.Tensor.softmax

    def softmax(scores, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = fn(scores, *args, **kwargs)
        if rule == "cp":
            return erules.stop_gradient(out)
        if scores.requires_grad:
            softmaxes.append((scores, out))
        return out

    return softmax


def tv_oracle(net: Clips, x: Tensor, target: int, rule: str, monkeypatch, deviations: list | None = None  # noqa: ANN001
              ) -> Tensor:
    """Gradient x Input of the torchvision model's own forward with LXT's efficient rules (module docstring).
    ``deviations`` (AttnLRP): gets, per softmax, by how much its rule changes the relevance sum:
    ``sum(s dL/ds) - sum(A dL/dA)`` (scores ``s``, weights ``A``)."""
    softmaxes: list[tuple[Tensor, Tensor]] = []
    monkeypatch.setattr(torch, "matmul", _uniform_product(torch.matmul))  # MViT: torch.matmul
    monkeypatch.setattr(torch.Tensor, "matmul", _uniform_product(torch.Tensor.matmul))  # Swin3D: q.matmul(k)
    monkeypatch.setattr(torch.Tensor, "softmax", _attention_weights(rule, softmaxes))
    monkeypatch.setattr(F, "layer_norm", _oracle_layer_norm)
    for m in net.modules():
        if isinstance(m, nn.GELU):
            monkeypatch.setattr(m, "forward", lambda t, f=m.forward: erules.identity_rule_implicit_fn.apply(f, t, EPS))
    for p in net.parameters():
        monkeypatch.setattr(p, "requires_grad", False)
    leaf = x.clone().requires_grad_(True)
    try:
        logit = net(leaf)[:, target].sum()
        grads = torch.autograd.grad(logit, [leaf, *(t for pair in softmaxes for t in pair)])
    finally:
        monkeypatch.undo()
    for i, (s, a) in enumerate(softmaxes):
        if deviations is not None:
            deviations.append(((s * grads[1 + 2 * i]).sum() - (a * grads[2 + 2 * i]).sum()).item())
    return leaf.detach() * grads[0]


@pytest.mark.parametrize("rule", ("attnlrp", "cp"))
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_equals_lxt_gradient_x_input_on_the_torchvision_forward(name: str, rule: str, monkeypatch) -> None:
    net, x = _net(name), _clip()
    rel, logits, _ = ours(net, x, 1, rule)
    ref = tv_oracle(net, x, 1, rule, monkeypatch)
    assert rel.abs().sum() > 0
    assert _rel_err(rel, ref) <= 1e-6, _rel_err(rel, ref)
    torch.testing.assert_close(logits, net(x).detach(), rtol=0, atol=1e-10)  # logits under the rules: the forward


def _zoo(builder: str) -> tuple[Clips, Tensor]:
    """torchvision's own builder (its block settings: 16 MViT blocks in four stages, Swin3D-T's 2-2-6-2 blocks with
    8x7x7 windows, padded here), random float64 weights, on a small clip (MViT told its input is 4 x 32 x 32)."""
    import torchvision.models.video as video

    kwargs = {"spatial_size": (32, 32), "temporal_size": 4} if builder.startswith("mvit") else {}
    torch.manual_seed(0)
    if kwargs:  # the MViT builders fix the input size they were trained at; the block settings are what matter here
        build = mvit._mvit

        def small(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            return build(*args, **{**kw, **kwargs})

        mvit._mvit = small
    try:
        model = getattr(video, builder)(num_classes=3).double().eval()
    finally:
        if kwargs:
            mvit._mvit = build
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "pos" in n or "cls" in n:
                p.add_(0.3 * torch.randn_like(p))
    size = 32 if kwargs else 64
    x = torch.randn(1, T, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return Clips(model), x


@pytest.mark.parametrize("builder", ["mvit_v1_b", "mvit_v2_s", "swin3d_t"])
def test_the_real_builders_equal_the_oracle(builder: str, monkeypatch) -> None:
    """At full depth (torchvision's block settings, a few seconds each) the engine still equals the oracle."""
    net, x = _zoo(builder)
    for rule in ("attnlrp", "cp"):
        rel, logits, _ = ours(net, x, 1, rule)
        ref = tv_oracle(net, x, 1, rule, monkeypatch)
        assert _rel_err(rel, ref) <= 1e-6, (rule, _rel_err(rel, ref))
        torch.testing.assert_close(logits, net(x).detach(), rtol=0, atol=1e-10)
