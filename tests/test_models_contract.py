"""The explainer contract: every registered network's stages compose to its forward, and bad stages fail clearly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidxai.models import NETWORKS, Stage, build_network, explain_stages, run_stages

SMALL = {
    "vgg16_lstm": {"hidden_size": 8, "batch_norm": True},
    "convlstm": {"hidden_channels": (4,)},
    "r2plus1d": {"width": 0.125},
    "videomae": {"num_frames": 3, "tubelet_size": 1, "image_size": 32, "patch_size": 8, "hidden_size": 16,
                 "num_layers": 2, "num_heads": 2, "intermediate_size": 32},
    "timesformer": {"num_frames": 3, "image_size": 32, "patch_size": 8, "hidden_size": 16, "num_layers": 2,
                    "num_heads": 2, "intermediate_size": 32},
    **{arch: {"num_frames": 3, "tubelet_size": 1, "image_size": 32, "patch_size": 8, "hidden_size": 16,
              "num_layers": 1, "num_heads": 2, "intermediate_size": 32} for arch in ("vivit", "vjepa2", "videoprism")},
}


@pytest.mark.parametrize("arch", sorted(NETWORKS))
def test_stages_compose_to_forward(arch):
    torch.manual_seed(0)
    net = build_network(arch, num_classes=3, **SMALL.get(arch, {})).double().eval()
    x = torch.randn(2, 3, 3, 32, 32, dtype=torch.float64)
    stages = explain_stages(net)
    assert stages[-1].kind == "head"
    # the stages share the network's tensors (no copies); a stage may be a new container of its modules
    owned = {id(t) for t in (*net.parameters(), *net.buffers())}
    staged = [t for s in stages for t in (*s.module.parameters(), *s.module.buffers())]
    assert staged and all(id(t) in owned for t in staged)
    assert sum(p.numel() for s in stages for p in s.module.parameters()) == sum(p.numel() for p in net.parameters())
    torch.testing.assert_close(run_stages(stages, x), net(x), rtol=0, atol=1e-12)


def test_lightning_module_is_unwrapped():
    net = build_network("convlstm", num_classes=2, hidden_channels=(4,))
    wrapper = nn.Module()
    wrapper.net = net
    assert [s.name for s in explain_stages(wrapper)] == ["encoder", "cells", "head"]


def test_network_without_contract_is_refused():
    with pytest.raises(TypeError, match="does not implement explain_stages"):
        explain_stages(nn.Sequential(nn.Linear(2, 2)))


def test_stage_with_copied_tensors_is_refused():
    class Copying(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 2)

        def explain_stages(self):
            return (Stage("frames", "frames", nn.Identity()), Stage("head", "head", copy.deepcopy(self.head)))

    with pytest.raises(TypeError, match="not the network's own"):
        explain_stages(Copying())


def test_malformed_stage_order_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 2)

        def explain_stages(self):
            return (Stage("head", "head", self.head), Stage("head", "frames", self.head))

    with pytest.raises(TypeError, match="valid are"):
        explain_stages(Bad())
