"""Attention rollout and Chefer et al.'s relevancy on tiny float64 transformers: hand computations and properties."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from test_xai_transformer import PATCH, SIZE, T, clip, tiny, tiny_timesformer, tiny_videomae  # noqa: E402

from vidxai.errors import ConfigError  # noqa: E402
from vidxai.evaluation.attention_methods import (  # noqa: E402
    _token_map,
    build_attention_rollout,
    build_chefer_relevancy,
)
from vidxai.xai.engine import Recorder  # noqa: E402


def _upsample_videomae(tokens: torch.Tensor) -> torch.Tensor:
    """VideoMAE token scores (S,) -> (T, H, W): tubelet 2 in time, PATCH x PATCH in space."""
    grid = tokens.reshape(T // 2, SIZE // PATCH, SIZE // PATCH)
    return grid.repeat_interleave(2, 0).repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)


def test_chefer_equals_hand_computation_one_layer() -> None:
    """One VideoMAE layer: R = I + mean_h((dy/dA * A)^+), read as the mean of the rows (mean pooling); the
    attention and its gradient taken from the transformers forward itself (output_attentions)."""
    net = tiny_videomae(layers=1)
    x = clip(batch=1)
    target = 2
    out = net.hf(pixel_values=x, output_attentions=True)
    (att,) = out.attentions
    (grad,) = torch.autograd.grad(out.logits[0, target], att)
    cam = (grad * att).clamp(min=0).mean(1)[0]
    rel = torch.eye(cam.shape[0], dtype=cam.dtype) + cam
    expected = _upsample_videomae(rel.mean(0))
    got = build_chefer_relevancy(net)(x[0], target, 0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, build_chefer_relevancy(net)(x[0], 0, 0))  # class-specific


def test_rollout_equals_matrix_product_videomae() -> None:
    """Two layers: the rows of (0.5 A2 + 0.5 I)(0.5 A1 + 0.5 I), A from the transformers forward."""
    net = tiny_videomae()
    x = clip(batch=1)
    with torch.no_grad():
        atts = net.hf(pixel_values=x, output_attentions=True).attentions
    eye = torch.eye(atts[0].shape[-1], dtype=x.dtype)
    mats = [0.5 * a.mean(1)[0] + 0.5 * eye for a in atts]
    expected = _upsample_videomae((mats[1] @ mats[0]).mean(0))
    torch.testing.assert_close(build_attention_rollout(net)(x[0], 0, 0), expected, rtol=1e-10, atol=1e-12)


def _full_timesformer_matrices(maps, n: int) -> list[torch.Tensor]:
    """The (1 + n T)^2 token matrices 0.5 M + 0.5 I of TimeSformer's divided steps, built entry by entry."""
    size = 1 + n * T
    idx = lambda p, f: 1 + p * T + f  # noqa: E731  (patch-major token order)
    out = []
    for role, m in maps:
        full = torch.zeros(size, size, dtype=m.dtype)
        if role == "temporal":
            full[0, 0] = 1.0  # the CLS token does not attend in time
            for p in range(n):
                for f in range(T):
                    for g in range(T):
                        full[idx(p, f), idx(p, g)] = m[p, f, g]
        else:
            for f in range(T):
                full[0, 0] += m[f, 0, 0] / T
                for q in range(n):
                    full[0, idx(q, f)] = m[f, 0, 1 + q] / T
                for p in range(n):
                    full[idx(p, f), 0] = m[f, 1 + p, 0]
                    for q in range(n):
                        full[idx(p, f), idx(q, f)] = m[f, 1 + p, 1 + q]
        out.append(0.5 * full + 0.5 * torch.eye(size, dtype=m.dtype))
    return out


def test_rollout_equals_matrix_product_timesformer_divided() -> None:
    """Divided attention as explicit token matrices (CLS copied per frame, averaged back): same rollout."""
    net = tiny_timesformer()
    x = clip(batch=1)
    recorder = Recorder(net.hf, None)
    with torch.no_grad():
        recorder.run(lambda: net(x))
    maps = [(role, p.mean(1)) for role, p in zip(["temporal", "spatial"] * 2, recorder.record.attentions)]
    assert [m.shape[0] for _, m in maps] == [(SIZE // PATCH) ** 2, T] * 2  # per patch over time, per frame
    n = (SIZE // PATCH) ** 2
    prod = torch.eye(1 + n * T, dtype=x.dtype)
    for mat in _full_timesformer_matrices(maps, n):
        prod = mat @ prod
    scores = prod[0, 1:].reshape(SIZE // PATCH, SIZE // PATCH, T).permute(2, 0, 1)
    expected = scores.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    got = build_attention_rollout(net)(x[0], 0, 0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got.sum() > 0


def test_rollout_of_identity_attention_is_uniform() -> None:
    """Mean pooling and every attention the identity: every pixel gets the same score."""
    net = tiny_videomae()
    tokens = net.explain_stages()[0].module
    s = (T // 2) * (SIZE // PATCH) ** 2
    eye = torch.eye(s, dtype=torch.float64)[None]
    out = _token_map(tokens, clip(batch=1)[0], [("joint", eye), ("joint", eye)], 0.5, 0.5)
    torch.testing.assert_close(out, torch.full_like(out, 1.0 / s))


def test_attention_baselines_refuse_a_network_without_attention() -> None:
    from vidxai.models.r2plus1d import R2Plus1D

    net = R2Plus1D(num_classes=3, width=0.25)
    for build in (build_attention_rollout, build_chefer_relevancy):
        with pytest.raises(ConfigError, match="no attention"):
            build(net)


def test_cp_lrp_is_a_default_method_beside_attnlrp_on_transformers_only() -> None:
    """`epsilon/cp` scores CP-LRP next to the default AttnLRP, built with that attention rule; CNNs never get it."""
    from vidxai.evaluation.methods import build_method, default_methods, not_applicable
    from vidxai.evaluation.registry import BuildContext
    from vidxai.models.r2plus1d import R2Plus1D
    from vidxai.xai.config import LRPConfig

    net = tiny_videomae()
    names = default_methods(net)
    assert "epsilon" in names and "epsilon/cp" in names and "epsilon/attnlrp" not in names
    assert "epsilon/attnlrp" in default_methods(net, attention_rule="cp") and "epsilon/half" not in names
    x = clip(batch=1)[0]
    ctx = BuildContext(replacement=torch.zeros_like)
    cp = build_method("epsilon/cp", net, ctx)
    assert cp.settings["attention_rule"] == "cp" and build_method("epsilon", net, ctx).settings["attention_rule"] == (
        "attnlrp")
    want = LRPConfig(attention_rule="cp").build(net).explain(x, target=1).pixel
    torch.testing.assert_close(cp.fn(x, 1, 0), want.to(cp.fn(x, 1, 0).dtype))
    attn = build_method("epsilon", net, ctx).fn(x, 1, 0)
    assert not torch.allclose(attn, cp.fn(x, 1, 0))  # the two rules differ on a random model
    cnn = R2Plus1D(num_classes=3, width=0.25)
    assert "epsilon/cp" not in default_methods(cnn) and "no attention stage" in not_applicable("epsilon/cp", cnn)


def test_rollout_equals_matrix_product_vivit_cls() -> None:
    """ViViT: the CLS row of (0.5 A2 + 0.5 I)(0.5 A1 + 0.5 I), A from the transformers forward (eager)."""
    net = tiny("vivit", attn_implementation="eager")
    x = clip(batch=1)
    with torch.no_grad():
        atts = net.hf(pixel_values=x, output_attentions=True).attentions
    eye = torch.eye(atts[0].shape[-1], dtype=x.dtype)
    mats = [0.5 * a.mean(1)[0] + 0.5 * eye for a in atts]
    expected = _upsample_videomae((mats[1] @ mats[0])[0, 1:])
    torch.testing.assert_close(build_attention_rollout(net)(x[0], 0, 0), expected, rtol=1e-6, atol=1e-9)


def test_rollout_starts_at_the_pooling_query_vjepa2() -> None:
    """V-JEPA 2's attentive pooler: the head-averaged cross-attention row of its query, then down through the
    pooler's and the encoder's self-attention (0.5 A + 0.5 I each)."""
    net = tiny("vjepa2")
    x = clip(batch=1)
    recorder = Recorder(net.hf, None)
    with torch.no_grad():
        recorder.run(lambda: net(x))
    *joint, cross = [p.mean(1)[0] for p in recorder.record.attentions]
    assert cross.shape[0] == 1 and all(m.shape[0] == m.shape[1] for m in joint)
    row = cross
    for m in reversed(joint):
        row = row @ (0.5 * m + 0.5 * torch.eye(m.shape[0], dtype=m.dtype))
    torch.testing.assert_close(build_attention_rollout(net)(x[0], 0, 0), _upsample_videomae(row[0]),
                               rtol=1e-10, atol=1e-12)
    assert build_chefer_relevancy(net)(x[0], 1, 0).abs().sum() > 0


def test_rollout_of_videoprism_factorised_attention_equals_the_full_matrix_product() -> None:
    """VideoPrism (factorised: spatial blocks per frame, then temporal blocks per patch, no CLS token, a pooling
    query): its maps from the transformers forward (output_attentions) put entry by entry into full token matrices
    (frame-major tokens), 0.5 M + 0.5 I each, multiplied from the pooling query's row down."""
    net = tiny("videoprism")
    x = clip(batch=1)
    with torch.no_grad():
        atts = net.hf(pixel_values_videos=x, output_attentions=True).attentions
    recorder = Recorder(net.hf, None)
    with torch.no_grad():
        recorder.run(lambda: net(x))
    pool = recorder.record.attentions[-1].mean(1)[0]  # (1, T n)
    layers = net.hf.config.num_spatial_layers
    frames, n = T, pool.shape[-1] // T
    size = frames * n
    assert len(atts) == 2 * layers and atts[0].shape[-1] == n and atts[-1].shape[-1] == frames
    mats = []
    for k, a in enumerate(atts):
        m = a.mean(1)  # spatial (T, n, n), temporal (n, T, T)
        full = torch.zeros(size, size, dtype=x.dtype)
        for i in range(size):
            t, p = divmod(i, n)
            for j in range(size):
                u, q = divmod(j, n)
                if k < layers and t == u:
                    full[i, j] = m[t, p, q]
                elif k >= layers and p == q:
                    full[i, j] = m[p, t, u]
        mats.append(0.5 * full + 0.5 * torch.eye(size, dtype=x.dtype))
    row = pool
    for m in reversed(mats):
        row = row @ m
    expected = _upsample_videomae_frames(row[0], n)
    # transformers' eager VideoPrism attention takes its softmax in float32: its maps are float32-exact only
    torch.testing.assert_close(build_attention_rollout(net)(x[0], 0, 0), expected, rtol=1e-6, atol=1e-9)
    chefer = build_chefer_relevancy(net)
    assert chefer(x[0], 1, 0).abs().sum() > 0
    assert not torch.allclose(chefer(x[0], 0, 0), chefer(x[0], 1, 0))  # class-specific


def _upsample_videomae_frames(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Per-frame token scores (T n,), frame-major -> (T, H, W): every frame its own step, PATCH x PATCH patches."""
    side = int(round(n ** 0.5))
    return tokens.reshape(T, side, side).repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
