"""LRP on torchvision's video CNNs as they are (r3d_18, mc3_18, r2plus1d_18, s3d), random weights, float64.

``VideoLRP(model)`` takes the raw torchvision model (clips ``(B, C, T, H, W)``, its layout) and must equal zennit
0.5.1 with its canonizers (BatchNorm merged) on the same model in zennit's canonical form (residual additions as
zennit's ``Sum``) to <= 1e-6 of the largest relevance: the three VideoResNets share every block type, so one rule
each (z, epsilon, the epsilon_plus_flat composite); S3D (its own blocks) all three. With every bias and BatchNorm
shift zero the z rule conserves the target logit. S3D is tested with its final ``AvgPool3d`` (2, 7, 7) made
adaptive so a tiny clip reaches it (the 14 x 224 x 224 clip it needs takes ~20 s on a CPU); every other module is
torchvision's own. MViT and Swin3D (the transformer engine, tests/test_xai_engine_torchvision.py) are checked here
only through the adapter: relevance in their own layout, equal to the engine's.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

zennit = pytest.importorskip("zennit")
import torchvision.models as tvm  # noqa: E402
from helpers import randomise_batch_norm, zennit_composite, zennit_form  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402

from vidxai.errors import ConfigError  # noqa: E402
from vidxai.xai import VideoLRP  # noqa: E402

CNNS = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")
#: relative tolerance of the zennit oracle (max |ours - zennit| / max |zennit|)
TOL = 1e-6


def _randomise(model: nn.Module, biases: bool) -> None:
    """Trained-looking BatchNorm statistics (eps 0: zennit's merge leaves x / sqrt(1 + eps)) and head biases;
    ``biases=False``: every bias, BN shift and running mean zero."""
    randomise_batch_norm(model, shifts=biases, eps=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.1) if biases else m.bias.zero_()
        head = model.classifier[1] if hasattr(model, "classifier") else model.fc
        head.weight.normal_(0, 0.5)  # logits of a useful size


@functools.cache
def _model(builder: str, biases: bool = True) -> nn.Module:
    """torchvision's ``builder`` with 5 classes, random weights, float64, eval mode (built once per case)."""
    torch.manual_seed(0)
    model = tvm.get_model(builder, weights=None, num_classes=5)
    if builder == "s3d":
        model.avgpool = nn.AdaptiveAvgPool3d(1)  # see the module docstring
    model = model.double().eval()
    _randomise(model, biases)
    return model


def _clip(builder: str, seed: int = 0) -> torch.Tensor:
    """The smallest clip the model takes down to its last map: S3D halves time 3x and space 5x."""
    g = torch.Generator().manual_seed(seed)
    size = (8, 32, 32) if builder == "s3d" else (4, 16, 16)
    return torch.randn(1, 3, *size, generator=g, dtype=torch.float64)


def _zennit_model(builder: str, model: nn.Module) -> nn.Module:
    """The same computation as a flat ``nn.Sequential`` in zennit's form (its ``Sum`` for residual additions)."""
    model = copy.deepcopy(model)
    if builder == "s3d":
        parts = [model.features, model.avgpool, model.classifier, nn.Flatten()]
    else:
        parts = [model.stem, model.layer1, model.layer2, model.layer3, model.layer4, model.avgpool, nn.Flatten(),
                 model.fc]
    return nn.Sequential(*[zennit_form(p) for p in parts]).eval()


#: the three VideoResNets share every block type, so one rule each; S3D (its own blocks) gets all three
ORACLE_CASES = [("r3d_18", "epsilon"), ("mc3_18", "z"), ("r2plus1d_18", "epsilon_plus_flat"),
                ("s3d", "z"), ("s3d", "epsilon"), ("s3d", "epsilon_plus_flat")]


@pytest.mark.parametrize(("builder", "rule"), ORACLE_CASES)
def test_torchvision_cnns_equal_zennit(builder: str, rule: str) -> None:
    model = _model(builder)
    x = _clip(builder)
    logits = model(x)
    target = int(logits.argmax())
    ours = VideoLRP(model, rule).attribute(x, target=target)
    assert ours.shape == x.shape  # torchvision's own layout (B, C, T, H, W)
    z_net = _zennit_model(builder, model)
    torch.testing.assert_close(z_net(x), logits, rtol=1e-10, atol=1e-12)
    start = torch.zeros_like(logits)
    start[0, target] = logits[0, target]
    composite = zennit_composite(rule, residual=True, merge_batch_norm=True)
    with Gradient(z_net, composite) as attributor:
        _, z_rel = attributor(x.clone(), attr_output=start.detach())
    scale = float(z_rel.abs().max())
    assert scale > 0
    error = float((ours - z_rel).abs().max()) / scale
    assert error <= TOL, f"{builder} {rule}: max |ours - zennit| / max |zennit| = {error:.2e}"


@pytest.mark.parametrize("builder", CNNS)
def test_torchvision_cnns_conserve_without_biases(builder: str) -> None:
    model = _model(builder, biases=False)
    x = _clip(builder, seed=1)
    # without biases the network is positively homogeneous: a large input makes the relevance that the fixed
    # stabilisers absorb (about 1e-6 per pooled or summed neuron) negligible against the logit
    # (the network is then homogeneous of degree 1: scaling the input scales the logit; scale it to 10)
    x = x * (10.0 / abs(float(model(x)[0, 2].detach())))
    rel, delta = VideoLRP(model, "z").attribute(x, target=2, return_convergence_delta=True)
    logit = float(model(x)[0, 2].detach())
    assert abs(logit) == pytest.approx(10.0)
    assert abs(float(delta[0])) <= 1e-5 * abs(logit), (float(rel.sum()), logit)


def test_the_model_is_left_as_it_was_and_explain_takes_its_layout() -> None:
    model = _model("r2plus1d_18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _clip("r2plus1d_18", seed=2)
    lrp = VideoLRP(model, "epsilon")
    assert lrp.layout == "BCTHW"
    e = lrp.explain(x[0])  # one clip (C, T, H, W)
    torch.testing.assert_close(e.relevance, lrp.attribute(x, target=e.target)[0].transpose(0, 1))
    assert e.pixel.shape == (4, 16, 16)
    torch.testing.assert_close(e.logits, model(x)[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("name", ["mvit_v2", "swin3d"])
def test_attention_models_as_they_are_equal_the_engine_in_their_layout(name: str) -> None:
    """A raw torchvision MViT / Swin3D goes through the adapter to the transformer engine: relevance in the model's
    own layout (B, C, T, H, W), equal to the engine on the same model behind vidxai's clips, the model untouched."""
    from test_xai_engine_torchvision import _clip as engine_clip
    from test_xai_engine_torchvision import _net as engine_net

    wrapped = engine_net(name)
    model, x = wrapped.model, engine_clip(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrp = VideoLRP(model, "epsilon")
    assert lrp.layout == "BCTHW"
    rel = lrp.attribute(x.transpose(1, 2), target=1)
    assert rel.shape == x.transpose(1, 2).shape
    expected = VideoLRP(wrapped, "epsilon").attribute(x, target=1).transpose(1, 2)
    torch.testing.assert_close(rel, expected, rtol=0, atol=1e-12)
    assert rel.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unknown_network_names_its_first_unknown_module() -> None:
    class Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(x)

    net = nn.Sequential(nn.Conv3d(3, 4, 3), Gate(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConfigError, match=r"cannot explain Sequential yet: it does not know Gate \(1\)"):
        VideoLRP(net)
