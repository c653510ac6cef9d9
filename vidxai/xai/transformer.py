"""The LRP forwards of the Hugging Face video transformer blocks (VideoMAE, TimeSformer).

Each handler recomputes its module's forward from the module's parameters (read, never called) with the
relevance-propagating functions of :class:`vidxai.xai.attention.TokenTrace`, following the installed
``transformers`` source (``models/videomae``, ``models/timesformer``) line by line. Dropout and drop-path are
the identity (eval mode).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.models.timesformer.modeling_timesformer import (
    TimesformerEmbeddings,
    TimesformerLayer,
)
from transformers.models.videomae.modeling_videomae import VideoMAEEmbeddings, VideoMAELayer

from vidxai.xai.attention import TokenTrace, register_block, split_heads

__all__: list[str] = []


def _check_size(name: str, got: tuple, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(
            f"{name} was built for clips of {want} (frames, height, width), got {tuple(got)}: "
            "set data.num_frames and data.size (or crop_size) to what the model was built for"
        )


# ----------------------------------------------------------------------------------------- VideoMAE
@register_block(VideoMAEEmbeddings)
def _videomae_embeddings(module: nn.Module, x: Tensor, trace: TokenTrace) -> Tensor:
    patch = module.patch_embeddings
    _check_size("VideoMAE", (x.shape[1], *x.shape[3:]), (module.config.num_frames, *patch.image_size))
    emb = trace.linear(x.permute(0, 2, 1, 3, 4), patch.projection, first=True).flatten(2).transpose(1, 2)
    return trace.add(emb, trace.constant("position", module.position_embeddings, emb, x.shape[0]))


@register_block(VideoMAELayer)
def _videomae_layer(module: nn.Module, h: Tensor, trace: TokenTrace) -> Tensor:
    att = module.attention.attention
    heads = att.num_attention_heads
    x = trace.norm(h, module.layernorm_before)
    q = split_heads(trace.linear(x, att.query), heads)
    k = split_heads(trace.linear(x, att.key), heads)
    v = split_heads(trace.linear(x, att.value), heads)
    context = trace.attention(q, k, v, att.scaling)
    h = trace.add(trace.linear(context, module.attention.output.dense), h)
    return trace.add(_mlp(module, trace.norm(h, module.layernorm_after), trace), h)


def _mlp(module: nn.Module, x: Tensor, trace: TokenTrace) -> Tensor:
    """``output.dense(act(intermediate.dense(x)))`` of an HF block."""
    inter = module.intermediate
    return trace.activated_linear(trace.linear(x, inter.dense), inter.intermediate_act_fn, module.output.dense)


# ----------------------------------------------------------------------------------------- TimeSformer
@register_block(TimesformerEmbeddings)
def _timesformer_embeddings(module: nn.Module, x: Tensor, trace: TokenTrace) -> Tensor:
    if module.attention_type == "space_only":
        raise ValueError("VideoLRP cannot explain TimeSformer with attention_type='space_only'; use divided_space_time")
    b, t = x.shape[:2]
    patch = module.patch_embeddings
    _check_size("TimeSformer", (t, *x.shape[3:]), (module.time_embeddings.shape[1], *patch.image_size))
    emb = trace.linear(x.reshape(b * t, *x.shape[2:]), patch.projection, first=True).flatten(2).transpose(1, 2)
    # per-sample constants, copied to every frame (rows b * T + t) / every patch (rows b * n + patch)
    cls = trace.constant("cls_token", module.cls_token, emb, b).repeat_interleave(t, 0)
    pos = trace.constant("position", module.position_embeddings, emb, b).repeat_interleave(t, 0)
    emb = trace.add(_cat(cls, emb), pos)
    cls, emb = emb[::t, :1], emb[:, 1:]  # HF takes rows [:b]: all CLS rows are equal; frame 0 of each sample here
    n, d = emb.shape[1:]
    emb = emb.reshape(b, t, n, d).permute(0, 2, 1, 3).reshape(b * n, t, d)
    emb = trace.add(emb, trace.constant("time", module.time_embeddings, emb, b).repeat_interleave(n, 0))
    return _cat(cls, emb.reshape(b, n * t, d))


def _cat(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat((a, b), dim=1)


def _timesformer_attention(module: nn.Module, x: Tensor, trace: TokenTrace, role: str = "joint") -> Tensor:
    """``TimeSformerAttention``: fused qkv projection, attention, output projection."""
    att = module.attention
    b, n, d = x.shape
    qkv = trace.linear(x, att.qkv).reshape(b, n, 3, att.num_heads, d // att.num_heads).permute(2, 0, 3, 1, 4)
    context = trace.attention(qkv[0], qkv[1], qkv[2], att.scale, role)
    return trace.linear(context, module.output.dense)


@register_block(TimesformerLayer)
def _timesformer_layer(module: nn.Module, h: Tensor, trace: TokenTrace) -> Tensor:
    if module.attention_type != "divided_space_time":  # joint_space_time: a plain pre-norm block
        h = trace.add(h, _timesformer_attention(module.attention, trace.norm(h, module.layernorm_before), trace))
    else:
        h = _divided_attention(module, h, trace)
    return trace.add(h, _mlp(module, trace.norm(h, module.layernorm_after), trace))


def _divided_attention(module: nn.Module, h: Tensor, trace: TokenTrace) -> Tensor:
    """Temporal attention per patch, then spatial attention per frame with the CLS token copied to every frame
    (its outputs averaged over the frames): TimesformerLayer's divided_space_time branch, residuals included."""
    cfg = module.config
    b, d, t = h.shape[0], h.shape[2], cfg.num_frames
    n = (h.shape[1] - 1) // t  # patches per frame
    cls, tokens = h[:, :1], h[:, 1:]
    temporal = trace.norm(tokens.reshape(b * n, t, d), module.temporal_layernorm)
    temporal = _timesformer_attention(module.temporal_attention, temporal, trace, "temporal").reshape(b, n * t, d)
    tokens = trace.add(tokens, trace.linear(temporal, module.temporal_dense))
    spatial = tokens.reshape(b, n, t, d).permute(0, 2, 1, 3).reshape(b * t, n, d)
    spatial = _cat(cls.repeat(1, t, 1).reshape(b * t, 1, d), spatial)
    spatial = _timesformer_attention(module.attention, trace.norm(spatial, module.layernorm_before), trace, "spatial")
    cls_out = trace.mean(spatial[:, 0].reshape(b, t, d), 1, keepdim=True)
    residual = spatial[:, 1:].reshape(b, t, n, d).permute(0, 2, 1, 3)  # a view (b, n, t, d): nothing copied
    # HF adds cat(cls, tokens) + cat(cls_out, residual): the sum rule is elementwise, so the two parts are summed
    # apart and joined after (the same values; neither concatenation is kept for the backward)
    tokens = trace.add(tokens.reshape(b, n, t, d), residual).reshape(b, n * t, d)
    return _cat(trace.add(cls, cls_out), tokens)
