"""``LRPConfig``: one value for every explainer setting; old config shapes still parse."""

from __future__ import annotations

import pytest
import torch

from vidxai.errors import ConfigError
from vidxai.models.registry import build_network
from vidxai.xai.config import LRPConfig


def test_from_dict_accepts_both_rule_shapes_and_nulls() -> None:
    old = LRPConfig.from_dict({"rule": {"name": "gamma", "params": {"gamma": 0.5}}, "lstm_eps": None})
    flat = LRPConfig.from_dict({"rule": "gamma", "params": {"gamma": 0.5}})
    assert old == flat
    assert old.lstm_eps == 1e-3 and old.params == {"gamma": 0.5}
    assert LRPConfig.from_dict({"rule": "z"}, chunk_frames=2).chunk_frames == 2


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="lstm_epss.*valid settings"):
        LRPConfig.from_dict({"lstm_epss": 1e-3})


def test_build_equals_direct_construction() -> None:
    torch.manual_seed(0)
    net = build_network("convlstm", num_classes=3, hidden_channels=[4], stem_channels=4).double().eval()
    x = torch.randn(1, 3, 3, 16, 16, dtype=torch.float64)
    cfg = LRPConfig(rule="alpha_beta", params={"alpha": 1.0, "beta": 0.0}, bias_factor=1.0)
    from vidxai.xai import VideoLRP

    direct = VideoLRP(net, "alpha_beta", alpha=1.0, beta=0.0, bias_factor=1.0).attribute(x, target=0)
    assert torch.equal(cfg.build(net).attribute(x, target=0), direct)
    # a changed setting changes the result: the settings really reach the explainer
    assert not torch.allclose(cfg.with_rule("epsilon").build(net).attribute(x, target=0), direct)
