"""torchvision's attention video models (MViT v1 / v2, Swin3D) through the same engine as the transformers:
tiny random builds, float64; their own forward under the rules (:mod:`vidxai.xai.engine`)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

mvit = pytest.importorskip("torchvision.models.video.mvit")
swin = pytest.importorskip("torchvision.models.video.swin_transformer")

from test_xai_transformer import ours  # noqa: E402

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
    """Two stages (shifted windows in the second block of none: depths 1, 1), patch merging between them."""
    return swin.SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
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


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_cp_conserves_with_biases_zeroed_attnlrp_does_not(name: str) -> None:
    """Biases zeroed: CP-LRP's pixels plus the constants' shares (position tables, CLS token, relative position
    bias) are the target logit; AttnLRP's softmax rule changes the sum (measured, not bounded)."""
    net, x = _net(name), _clip(1)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(".bias") and "relative_position" not in n:
                p.zero_()
    ratios = {}
    for rule in ("cp", "attnlrp"):  # every stabiliser 1e-12 (test_xai_transformer.ours)
        rel, logits, shares = ours(net, x, 2, rule)
        ratios[rule] = (rel.sum() + sum(v.sum() for v in shares.values())).item() / logits[0, 2].item()
        assert rel.abs().sum() > 0
    assert abs(ratios["cp"] - 1) < 1e-8, ratios
    assert abs(ratios["attnlrp"] - 1) > 1e-6, ratios


def test_attention_rules_differ_on_torchvision() -> None:
    net, x = _net("swin3d"), _clip()
    a = VideoLRP(net, attention_rule="attnlrp").attribute(x, 0)
    c = VideoLRP(net, attention_rule="cp").attribute(x, 0)
    assert ((a - c).abs().max() / a.abs().max()).item() > 1e-4
