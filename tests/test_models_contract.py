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




def tiny_config(arch: str) -> dict:
    """The keyword arguments of a small ``arch``: the network class's own ``tiny_config`` (a dict or a
    function returning one) where it has one, else this module's ``SMALL``. A registered network with neither
    fails here, named, rather than being built at full size or left unchecked."""
    own = getattr(NETWORKS[arch], "tiny_config", None)
    if own is not None:
        return dict(own() if callable(own) else own)
    assert arch in SMALL, (f"network {arch!r} is registered but has no tiny config: give its class a "
                           "`tiny_config` dict (the smallest arguments that build it) or add it to SMALL here")
    return dict(SMALL[arch])


def tiny_input(kwargs: dict, batch: int = 2) -> torch.Tensor:
    """A float64 batch ``(B, T, C, H, W)`` that fits a tiny network (its ``num_frames`` / ``image_size``)."""
    frames, size = kwargs.get("num_frames", 3), kwargs.get("image_size", 32)
    return torch.randn(batch, frames, 3, size, size, dtype=torch.float64)


@pytest.mark.parametrize("arch", sorted(NETWORKS))
def test_every_registered_network_builds_small_and_classifies(arch):
    """Registered = usable: ``build_network`` builds it at its tiny config with any number of classes, it maps
    a clip batch to one logit per class, and a model config under conf/model/ names it."""
    from helpers import ROOT
    from omegaconf import OmegaConf

    cls = NETWORKS[arch]
    assert isinstance(cls, type) and issubclass(cls, nn.Module), cls
    kwargs = tiny_config(arch)
    net = build_network(arch, num_classes=5, **kwargs).eval()
    assert isinstance(net, cls)
    with torch.no_grad():
        logits = net(tiny_input(kwargs).float())
    assert logits.shape == (2, 5) and torch.isfinite(logits).all(), (arch, logits.shape)
    configs = [p.name for p in (ROOT / "conf" / "model").glob("*.yaml")  # `# @package _global_` ones: model.net
               if arch in (OmegaConf.select(OmegaConf.load(p), k) for k in ("net.arch", "model.net.arch"))]
    assert configs, f"no conf/model/*.yaml has net.arch: {arch} (train.py model=... cannot reach it)"


@pytest.mark.parametrize("arch", sorted(NETWORKS))
def test_stages_compose_to_forward(arch):
    torch.manual_seed(0)
    kwargs = tiny_config(arch)
    net = build_network(arch, num_classes=3, **kwargs).double().eval()
    x = tiny_input(kwargs)
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
