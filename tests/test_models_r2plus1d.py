"""R(2+1)D-18: torchvision's layout and state-dict keys, narrow widths, Kinetics weights from the local cache."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18

from vidxai.models import R2Plus1D, build_network, r2plus1d_weights_file


@functools.cache
def _torchvision_state() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision ``r2plus1d_18`` (400 classes, as the Kinetics file), built once."""
    torch.manual_seed(0)
    return r2plus1d_18(weights=None).state_dict()


def test_full_width_is_torchvision_r2plus1d_18() -> None:
    torch.manual_seed(1)
    tv = r2plus1d_18(weights=None, num_classes=5).eval()
    net = R2Plus1D(5).eval()
    assert list(net.state_dict()) == list(tv.state_dict())  # same keys, same order
    net.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 3, 16, 16)  # (B, T, C, H, W): the net permutes to torchvision's (B, C, T, H, W)
    torch.testing.assert_close(net(x), tv(x.transpose(1, 2)), rtol=0, atol=0)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in tv.parameters())


def test_narrow_widths_train_shapes_and_errors() -> None:
    net = build_network("r2plus1d", 4, width=0.25)
    assert isinstance(net, R2Plus1D) and net.fc.in_features == 128 and net.stem[0].out_channels == 11
    assert sum(p.numel() for p in net.parameters()) == 1_961_779  # 1,962,682 for 11 classes
    small = build_network("r2plus1d", 4, width=0.125)
    small(torch.randn(2, 4, 3, 16, 16)).sum().backward()  # trains: every parameter gets a gradient
    assert all(p.grad is not None for p in small.parameters())
    assert build_network("r2plus1d", 3, width=0.125).eval()(torch.randn(1, 1, 3, 16, 16)).shape == (1, 3)
    with pytest.raises(ValueError, match="width must be a number in"):
        R2Plus1D(3, width=0)
    with pytest.raises(ValueError, match="RGB"):
        net(torch.randn(1, 8, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        net(torch.zeros(1, 8, 3, 32, 32, dtype=torch.uint8))


def test_missing_kinetics_weights_give_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / "r2plus1d_18-91a641e6.pth"
    assert r2plus1d_weights_file() == expected
    with pytest.raises(FileNotFoundError) as info:
        R2Plus1D(3, pretrained=True)
    message = str(info.value)
    assert str(expected) in message and "download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in message
    assert "pretrained=False" in message and "\n" not in message
    with pytest.raises(ValueError, match="need width=1"):
        R2Plus1D(3, width=0.5, pretrained=True)


def test_kinetics_weights_load_from_the_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A saved torchvision state dict round-trips: every tensor but ``fc`` (400 Kinetics classes) is loaded."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    state = _torchvision_state()
    path = r2plus1d_weights_file()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    net = R2Plus1D(7, pretrained=True)
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert net.fc.out_features == 7
    # an explicit weights_path works without the hub cache
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "elsewhere"))
    net2 = build_network("r2plus1d", 2, weights_path=str(path))
    assert torch.equal(net2.layer4[1].conv2[0][3].weight, state["layer4.1.conv2.0.3.weight"])


def test_wrong_weights_files_give_clear_errors(tmp_path: Path) -> None:
    other = tmp_path / "vgg.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)).state_dict(), other)
    with pytest.raises(ValueError, match="do not match torchvision's r2plus1d_18"):
        R2Plus1D(3, weights_path=str(other))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read R\(2\+1\)D-18 weights"):
        R2Plus1D(3, weights_path=str(bad))
