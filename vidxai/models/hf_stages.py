"""The explainer stages of the Hugging Face video transformers (VideoMAE, TimeSformer).

A network with ``.hf`` (a ``VideoMAEForVideoClassification`` or ``TimesformerForVideoClassification``) is
explained as two stages: ``tokens`` (a :class:`TokenEncoder` over the network's own HF modules: embeddings,
blocks, final norm, pooling; ``(B, T, C, H, W) -> (B, D)``) and ``head`` (the classifier). Composing them gives
``net.hf(pixel_values=x).logits`` (tested, eager and sdpa attention).
"""

from __future__ import annotations

from torch import Tensor, nn

from vidxai.models.contract import Stage, register_stage_kind

__all__ = ["TokenEncoder", "transformer_stages"]


def _run_tokens(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


# "tokens": clips (B, T, C, H, W) -> pooled (B, D), the first stage; the head follows it
register_stage_kind("tokens", _run_tokens, before=("head",), first=True)


class TokenEncoder(nn.Module):
    """Embeddings, transformer blocks, final norm and pooling of an HF video transformer, as one module.

    Args:
        embeddings: the HF embedding module (tubelet / patch projection, position tables, CLS token).
        layers: the HF blocks (``nn.ModuleList``), run in order.
        norm: the norm over all tokens after the blocks, or ``None``.
        pool: ``"mean"`` (mean over tokens) or ``"cls"`` (token 0).
        pool_norm: the norm of the pooled vector (VideoMAE's ``fc_norm``), or ``None``.
    """

    def __init__(
        self, embeddings: nn.Module, layers: nn.ModuleList, norm: nn.Module | None, pool: str,
        pool_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.embeddings, self.layers, self.norm, self.pool, self.pool_norm = embeddings, layers, norm, pool, pool_norm

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, D)`` of clips ``(B, T, C, H, W)``, exactly as the HF forward computes them."""
        h = self.embeddings(x, None) if _is_videomae(self.embeddings) else self.embeddings(x)
        for layer in self.layers:
            h = layer(h)
            h = h[0] if isinstance(h, tuple) else h
        if self.norm is not None:
            h = self.norm(h)
        pooled = h.mean(1) if self.pool == "mean" else h[:, 0]
        return pooled if self.pool_norm is None else self.pool_norm(pooled)


    @property
    def has_cls_token(self) -> bool:
        """Whether token 0 is a CLS token (TimeSformer) rather than the first patch (VideoMAE)."""
        return not _is_videomae(self.embeddings)

    def tokens_to_pixels(self, values: Tensor, frames: int, height: int, width: int) -> Tensor:
        """Per-token values ``(B, S)`` (the patch tokens, CLS left out, in forward order) -> ``(B, T, H, W)``:
        every pixel of a tubelet (VideoMAE: ``tubelet_size`` frames x patch) or patch (TimeSformer: one frame x
        patch) gets its token's value."""
        patch = self.embeddings.patch_embeddings
        ph, pw = patch.patch_size
        gh, gw = height // ph, width // pw
        if _is_videomae(self.embeddings):
            grid = values.reshape(-1, frames // patch.tubelet_size, gh, gw).repeat_interleave(patch.tubelet_size, 1)
        else:  # TimeSformer orders the tokens patch-major: index = patch * T + frame
            grid = values.reshape(-1, gh, gw, frames).permute(0, 3, 1, 2)
        return grid.repeat_interleave(ph, 2).repeat_interleave(pw, 3)


    def tokens_per_step(self, values: Tensor, frames: int) -> Tensor:
        """Per-token vectors ``(B, S, D)`` (CLS included where there is one) summed over the patches of each time
        step: ``(B, T', D)``, ``T'`` the tubelets (VideoMAE) or the frames (TimeSformer)."""
        if _is_videomae(self.embeddings):
            steps = frames // self.embeddings.patch_embeddings.tubelet_size
            return values.reshape(values.shape[0], steps, -1, values.shape[-1]).sum(2)
        tokens = values[:, 1:]  # patch-major: index = patch * T + frame
        return tokens.reshape(values.shape[0], -1, frames, values.shape[-1]).sum(1)


def _is_videomae(module: nn.Module) -> bool:
    from transformers.models.videomae.modeling_videomae import VideoMAEEmbeddings

    return isinstance(module, VideoMAEEmbeddings)


def transformer_stages(net: nn.Module) -> tuple[Stage, ...]:
    """``(Stage("hf", "tokens", TokenEncoder), Stage("hf.classifier", "head", classifier))`` of ``net.hf``."""
    from transformers import TimesformerForVideoClassification, VideoMAEForVideoClassification

    hf = getattr(net, "hf", None)
    if isinstance(hf, VideoMAEForVideoClassification):
        body = hf.videomae
        mean = hf.fc_norm is not None
        tokens = TokenEncoder(
            body.embeddings, body.encoder.layer, body.layernorm, "mean" if mean else "cls", hf.fc_norm
        )
    elif isinstance(hf, TimesformerForVideoClassification):
        body = hf.timesformer
        tokens = TokenEncoder(body.embeddings, body.encoder.layer, body.layernorm, "cls")
    else:
        raise TypeError(
            f"cannot explain {type(net).__name__}: transformer_stages needs .hf to be a "
            f"VideoMAEForVideoClassification or TimesformerForVideoClassification, got {type(hf).__name__}"
        )
    return Stage("hf", "tokens", tokens), Stage("hf.classifier", "head", nn.Sequential(hf.classifier))
