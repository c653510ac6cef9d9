"""Attention baselines for video transformers, as attribution functions ``fn(clip, target, key) -> (T, H, W)``.

- **Attention rollout** (Abnar & Zuidema 2020): per attention layer the head-averaged attention ``A`` mixed with the
  residual, ``0.5 A + 0.5 I``; the product over the layers, read at the pooled output (the CLS row, or the mean
  of all rows for mean pooling). Class-agnostic: ``target`` is not used.
- **Gradient-weighted attention relevancy** (Chefer, Gur & Wolf, ICCV 2021, "Generic attention-model
  explainability"): ``R = I``, then per layer ``R <- R + mean_heads((dy_t/dA * A)^+) R``; read like rollout.

Both run on the token stage of the explainer contract (``vidxai.models.hf_stages.ModelBody``): the model's own
forward records its attention maps (:func:`vidxai.xai.engine.Recorder`: the attention interface switched to an
explicit eager attention, the probabilities kept in the graph), the rows are propagated as vectors from the
output down (no ``n x n`` products), TimeSformer's divided attention as its two steps (each patch over the
frames, then each frame's patches with the CLS token copied to every frame and averaged back). The start row is
the pooling: the CLS row, the mean of all rows (mean pooling), or the head-averaged row of the pooling head's
cross-attention (V-JEPA 2's attentive pooler: its learned query attends to the tokens; for Chefer its
gradient-weighted row). The token scores (CLS left out) are mapped to pixels through the tubelet / patch geometry
(``TokenGeometry.tokens_to_pixels``): every pixel of a tubelet or patch gets its token's score. VideoPrism's
factorised encoder (no CLS token) is its two kinds of maps: each frame's patches over each other (the spatial
blocks), then each patch over the frames (the temporal blocks); the start row is its pooling head's query row over
all tokens (frame-major, as the encoder returns them). A network whose geometry says ``attention="none"`` is
skipped with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.evaluation.registry import register_method
from vidxai.models.contract import explain_stages
from vidxai.xai.engine import Recorder

__all__ = ["build_attention_rollout", "build_chefer_relevancy"]

#: ``fn(clip (T, C, H, W), target, key) -> (T, H, W)``, like ``vidxai.evaluation.methods.AttributeFn``.
AttributeFn = Callable[[Tensor, int, int], Tensor]


def _token_stages(net: nn.Module, method: str) -> tuple[nn.Module, nn.Module]:
    """The token stage's module (a ``ModelBody``) and the head's of ``net``; one clear error for a network without
    attention or whose attention the baselines do not cover."""
    try:
        stages = explain_stages(net)
    except TypeError as err:
        raise ConfigError(f"{method} cannot explain this network: {err}") from None
    tokens = [s for s in stages if s.kind == "tokens"]
    if not tokens:
        kinds = [s.kind for s in stages]
        raise ConfigError(
            f"{method} needs a transformer (a 'tokens' stage); {type(net).__name__} has stages {kinds} and no "
            "attention: leave it out of methods= or use a transformer model (model=videomae, ...)"
        )
    body = tokens[0].module
    geometry = getattr(body, "geometry", None)
    if geometry is None or geometry.attention == "none":
        why = geometry.why if geometry is not None else "its token geometry is unknown"
        raise ConfigError(f"{method} does not apply to {type(net).__name__}: {why}")
    return body, stages[-1].module


def _no_attention(net: nn.Module) -> str | None:
    """``None`` for a network with a ``tokens`` stage, else why the attention baselines do not apply."""
    try:
        _token_stages(net, "an attention baseline")
    except ConfigError as err:
        return str(err)
    return None


@contextlib.contextmanager
def _grad_mode() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _record(body: nn.Module, head: nn.Module, clip: Tensor) -> tuple[Tensor, list[tuple[str, Tensor]]]:
    """Logits ``(1, C)`` of one clip and the attention maps of the model's own forward (in the graph), each with
    its role: ``joint``, ``temporal`` / ``spatial`` (TimeSformer's divided attention) or ``pool`` (a pooling head's
    cross-attention, one query row)."""
    ref = next(iter(body.parameters()))
    x = clip.detach().clone()[None].to(device=ref.device, dtype=ref.dtype)
    recorder = Recorder(body.model, body.classifier.weight)
    pooled = recorder.run(body.call(x))
    record = recorder.record
    attention, spatial_layers = body.geometry.attention, body.geometry.spatial_layers
    maps: list[tuple[str, Tensor]] = []
    for k, p in enumerate(record.attentions):
        if p.shape[-2] == 1 and p.shape[-1] > 1:
            role = "pool"
        elif attention == "divided":
            role = "temporal" if k % 2 == 0 else "spatial"
        elif attention == "factorised":  # the spatial blocks come first
            role = "space" if k < spatial_layers else "time"
        else:
            role = "joint"
        maps.append((role, p))
    return head(body.pooled(pooled)), maps


def _apply(role: str, r: Tensor, m: Tensor, a: float, b: float, frames: int) -> Tensor:
    """``r (1, S)`` times the layer matrix ``a I + b M`` (``M``: head-averaged ``(B', n, n)`` of ``role``)."""
    if role == "joint":
        return a * r + b * (r[:, None, :] @ m)[:, 0]
    if role == "space":  # factorised (no CLS, frame-major tokens): each frame's patches, M (T', n, n)
        steps, n = m.shape[0], m.shape[-1]
        return a * r + b * (r.reshape(steps, 1, n) @ m).reshape(1, steps * n)
    if role == "time":  # factorised: each patch over the steps, M (n, T', T')
        n, steps = m.shape[0], m.shape[-1]
        mixed = (r.reshape(steps, n).t()[:, None, :] @ m)[:, 0]  # (n, T')
        return a * r + b * mixed.t().reshape(1, steps * n)
    cls, tok = r[:, :1], r[:, 1:]  # TimeSformer: CLS first, then the patches patch-major (patch * T + frame)
    n = tok.shape[1] // frames
    if role == "temporal":  # each patch over the frames; the CLS token does not take part
        mixed = (tok.reshape(n, 1, frames) @ m)[:, 0].reshape(1, n * frames)
        return torch.cat((cls, a * tok + b * mixed), 1)
    # spatial: per frame, the CLS copy (row weight 1/T: its outputs are averaged over the frames) and the patches
    v = torch.cat((cls.expand(frames, 1) / frames, tok.reshape(n, frames).t()), 1)  # (T, 1 + n)
    u = (v[:, None, :] @ m)[:, 0]  # (T, 1 + n)
    new_cls = a * cls + b * u[:, :1].sum(0, keepdim=True)
    return torch.cat((new_cls, a * tok + b * u[:, 1:].t().reshape(1, n * frames)), 1)


def _num_tokens(role: str, m: Tensor, frames: int) -> int:
    """Tokens of a clip from one head-averaged map: joint ``(1, S, S)``, spatial ``(T, 1 + n, 1 + n)``."""
    if role == "joint":
        return m.shape[-1]
    if role in ("space", "time"):  # factorised: (T', n, n) or (n, T', T')
        return m.shape[0] * m.shape[-1]
    return 1 + (m.shape[-1] - 1) * frames if role == "spatial" else 1 + m.shape[0] * frames


def _token_map(
    tokens: nn.Module, clip: Tensor, layers: list[tuple[str, Tensor]], a: float, b: float
) -> Tensor:
    """Rows propagated from the pooled output down through ``layers`` ``(role, M)``, mapped to ``(T, H, W)``."""
    frames, _, height, width = clip.shape
    geometry = tokens.geometry
    if layers[-1][0] == "pool":  # a pooling head's query row over the tokens starts the propagation
        r = layers[-1][1][:, 0]
        layers = layers[:-1]
    else:
        size = _num_tokens(*layers[-1], frames)
        if geometry.pool == "mean":
            r = torch.full((1, size), 1.0 / size, dtype=layers[0][1].dtype, device=layers[0][1].device)
        else:
            r = torch.zeros(1, size, dtype=layers[0][1].dtype, device=layers[0][1].device)
            r[0, 0] = 1.0
    for role, m in reversed(layers):
        r = _apply(role, r, m, a, b, frames)
    r = r[:, 1:] if geometry.cls else r
    return geometry.tokens_to_pixels(r, frames, height, width)[0]


@register_method("attention_rollout", family="attention", plain=True, applies=_no_attention)
def build_attention_rollout(net: nn.Module) -> AttributeFn:
    """Attention rollout of ``net`` (a transformer with a ``tokens`` stage); ``target`` is not used."""
    tokens, head = _token_stages(net, "attention_rollout")

    def fn(clip: Tensor, target: int, key: int = 0) -> Tensor:
        with torch.no_grad():
            _, maps = _record(tokens, head, clip)
        return _token_map(tokens, clip, [(role, p.mean(1)) for role, p in maps], 0.5, 0.5)

    return fn


@register_method("chefer_relevancy", family="attention", plain=True, applies=_no_attention)
def build_chefer_relevancy(net: nn.Module) -> AttributeFn:
    """Chefer et al.'s gradient-weighted attention relevancy of ``net`` for class ``target``."""
    tokens, head = _token_stages(net, "chefer_relevancy")

    def fn(clip: Tensor, target: int, key: int = 0) -> Tensor:
        with _grad_mode():
            logits, maps = _record(tokens, head, clip)
            grads = torch.autograd.grad(logits[0, int(target)], [p for _, p in maps])
        weighted = [(role, (g * p).clamp(min=0).mean(1).detach()) for (role, p), g in zip(maps, grads)]
        return _token_map(tokens, clip, weighted, 1.0, 1.0)

    return fn

