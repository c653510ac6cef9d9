"""Tests of the plain networks: VGG16LSTM, ConvLSTMCell, ConvLSTM and build_network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from vidxai.models import NETWORKS, VGG16LSTM, ConvLSTM, ConvLSTMCell, build_network, vgg16_weights_file

B, T, H, W = 2, 4, 32, 32


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tv_features(batch_norm: bool = False) -> nn.Sequential:
    """torchvision's own VGG16 conv stack (what ``vgg16().features`` is), without the big classifier."""
    return make_layers(cfgs["D"], batch_norm=batch_norm)


def clip(b: int = B, t: int = T, c: int = 3, h: int = H, w: int = W) -> torch.Tensor:
    return torch.randn(b, t, c, h, w)


# ------------------------------------------------------------------------------------ VGG16LSTM
def test_vgg16_lstm_shapes_and_structure() -> None:
    net = VGG16LSTM(num_classes=5, hidden_size=16).eval()
    x = clip()
    assert net(x).shape == (B, 5)
    assert net.features(x).shape == (B, T, 512)
    assert net.encoder(x.flatten(0, 1)).shape == (B * T, 512)
    assert isinstance(net.lstm, nn.LSTM) and net.lstm.batch_first and net.lstm.input_size == 512
    assert isinstance(net.head[0], nn.Dropout) and isinstance(net.head[-1], nn.Linear)
    # flat encoder of standard layers, no in-place ReLU (the LRP engine walks it layer by layer)
    assert all(not isinstance(m, nn.Sequential) for m in net.encoder)
    assert all(not m.inplace for m in net.encoder if isinstance(m, nn.ReLU))
    assert isinstance(net.encoder[-2], nn.AdaptiveAvgPool2d) and isinstance(net.encoder[-1], nn.Flatten)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_encoder_equals_torchvision_features(batch_norm: bool) -> None:
    reference = tv_features(batch_norm).eval()
    net = VGG16LSTM(num_classes=3, hidden_size=8, batch_norm=batch_norm).eval()
    state = reference.state_dict()
    if batch_norm:  # non-trivial running statistics, so BN really is compared
        for k in state:
            if k.endswith("running_mean") or k.endswith("running_var"):
                state[k] = torch.rand_like(state[k]) + 0.5
        reference.load_state_dict(state)
    missing = nn.Sequential(*net.encoder[:-2]).load_state_dict(state)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = clip()
    frames = x.flatten(0, 1)
    expected = reference(frames).mean(dim=(2, 3))
    assert torch.allclose(net.encoder(frames), expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(net.features(x), expected.reshape(B, T, 512), atol=1e-5, rtol=1e-4)


def test_vgg16_lstm_forward_equals_manual_pipeline() -> None:
    net = VGG16LSTM(num_classes=4, hidden_size=8).eval()
    x = clip()
    feats = torch.stack([net.encoder(x[:, t]) for t in range(T)], dim=1)
    out, _ = net.lstm(feats)
    assert torch.allclose(net(x), net.head[-1](out[:, -1]), atol=1e-5)


def test_vgg16_lstm_rejects_bad_input() -> None:
    net = VGG16LSTM(num_classes=2, hidden_size=4)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        net(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 32x32"):
        net(torch.randn(1, 2, 3, 16, 16))
    with pytest.raises(ValueError, match="must be float"):
        net(torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8))


def test_pretrained_missing_file_gives_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / "vgg16-397923af.pth"
    assert vgg16_weights_file() == expected
    with pytest.raises(FileNotFoundError) as info:
        VGG16LSTM(num_classes=2, pretrained=True)
    message = str(info.value)
    assert str(expected) in message and "download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "\n" not in message
    assert vgg16_weights_file(batch_norm=True).name == "vgg16_bn-6c64b313.pth"


@pytest.mark.parametrize("full_model", [True, False])
def test_pretrained_loads_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, full_model: bool
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = tv_features()
    state = reference.state_dict()
    if full_model:  # a torchvision VGG16 checkpoint: "features.*" plus classifier weights
        state = {f"features.{k}": v for k, v in state.items()} | {"classifier.0.weight": torch.zeros(2, 2)}
    path = tmp_path / "checkpoints" / "vgg16-397923af.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    net = VGG16LSTM(num_classes=2, hidden_size=4, pretrained=True)
    assert torch.equal(net.encoder[0].weight, reference[0].weight)
    assert torch.equal(net.encoder[28].bias, reference[28].bias)
    # explicit weights_path works without the hub cache
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "elsewhere"))
    net2 = VGG16LSTM(num_classes=2, hidden_size=4, weights_path=str(path))
    assert torch.equal(net2.encoder[0].weight, reference[0].weight)


def test_pretrained_mismatched_weights_give_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "vgg16_bn.pth"
    torch.save(tv_features(batch_norm=True).state_dict(), path)
    with pytest.raises(ValueError, match="batch_norm"):
        VGG16LSTM(num_classes=2, hidden_size=4, weights_path=str(path))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read VGG16 weights"):
        VGG16LSTM(num_classes=2, hidden_size=4, weights_path=str(bad))


def test_freeze_encoder() -> None:
    net = VGG16LSTM(num_classes=3, hidden_size=8, freeze_encoder=True, batch_norm=True)
    assert all(not p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in [*net.lstm.parameters(), *net.head.parameters()])
    net.train()
    assert net.training and net.lstm.training and not net.encoder.training
    assert all(not m.training for m in net.encoder.modules())
    net(clip()).sum().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert net.head[-1].weight.grad is not None


# ----------------------------------------------------------------------------------- ConvLSTM
def test_convlstm_cell_equals_hand_written_step() -> None:
    cell = ConvLSTMCell(3, 5, kernel_size=3)
    x, h, c = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 6, 6), torch.randn(2, 5, 6, 6)
    z = nn.functional.conv2d(torch.cat([x, h], 1), cell.conv.weight, cell.conv.bias, padding=1)
    i, f, g, o = z[:, :5].sigmoid(), z[:, 5:10].sigmoid(), z[:, 10:15].tanh(), z[:, 15:].sigmoid()
    c_new = f * c + i * g
    h_new = o * c_new.tanh()
    h_out, c_out = cell(x, (h, c))
    assert torch.allclose(c_out, c_new, atol=1e-6) and torch.allclose(h_out, h_new, atol=1e-6)
    h0, c0 = cell(x)  # zero initial state
    assert torch.allclose(h0, cell(x, (torch.zeros_like(h), torch.zeros_like(c)))[0])
    assert cell.conv.in_channels == 8 and cell.conv.out_channels == 20


def test_convlstm_cell_rejects_even_kernel() -> None:
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(3, 4, kernel_size=2)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_convlstm_with_1x1_kernel_equals_torch_lstm(num_layers: int) -> None:
    """Strong oracle: on 1x1 frames with 1x1 kernels a ConvLSTM is exactly an nn.LSTM."""
    d, hid, t = 5, 7, 6
    net = ConvLSTM(num_classes=3, in_channels=d, hidden_channels=(hid,) * num_layers, kernel_size=1,
                   stem_channels=0, dropout=0.0).eval()  # fmt: skip
    lstm = nn.LSTM(d, hid, num_layers=num_layers, batch_first=True)
    with torch.no_grad():
        for layer, cell in enumerate(net.cells):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            cell.conv.weight.copy_(torch.cat([w_ih, w_hh], dim=1)[:, :, None, None])
            cell.conv.bias.copy_(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
    x = torch.randn(3, t, d)
    expected, _ = lstm(x)
    hidden = net.recurrence(net.features(x[..., None, None]))
    assert hidden.shape == (3, t, hid, 1, 1)
    assert torch.allclose(hidden[..., 0, 0], expected, atol=1e-6)
    assert torch.allclose(net(x[..., None, None]), net.head[-1](expected[:, -1]), atol=1e-6)


def test_convlstm_shapes_and_structure() -> None:
    net = ConvLSTM(num_classes=6).eval()
    x = clip()
    assert net(x).shape == (B, 6)
    assert net.features(x).shape == (B, T, 16, H // 2, W // 2)
    assert net.recurrence(net.features(x)).shape == (B, T, 32, H // 2, W // 2)
    assert isinstance(net.cells, nn.ModuleList) and len(net.cells) == 2
    assert [type(m) for m in net.head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Linear]
    no_stem = ConvLSTM(num_classes=2, stem_channels=0, hidden_channels=(4,))
    assert isinstance(no_stem.encoder, nn.Identity) and no_stem(clip(h=8, w=8)).shape == (B, 2)
    with pytest.raises(ValueError, match="input channels"):
        net(clip(c=1))


def test_convlstm_depends_on_frame_order() -> None:
    net = ConvLSTM(num_classes=3, dropout=0.0).eval()
    x = clip()
    assert not torch.allclose(net(x), net(x.flip(1)))


def test_paper_sized_presets() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ConvLSTM(11, hidden_channels=(120, 96), stem_channels=0)) == 1_279_787
    assert count(VGG16LSTM(11, hidden_size=324)) == 15_804_311


# ------------------------------------------------------------------------------- build_network
def test_build_network_registry() -> None:
    """(Every registered network is built and checked in test_models_contract.py; these two by class.)"""
    assert {"vgg16_lstm", "convlstm"} <= set(NETWORKS)
    net = build_network("convlstm", 4, hidden_channels=[8], stem_channels=4)
    assert isinstance(net, ConvLSTM) and net.head[-1].out_features == 4
    assert isinstance(build_network("vgg16_lstm", 3, hidden_size=8), VGG16LSTM)


def test_build_network_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown network arch='resnet'.*convlstm.*vgg16_lstm"):
        build_network("resnet", 3)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['hiden_size'\].*hidden_size"):
        build_network("vgg16_lstm", 3, hiden_size=8)
