"""The one way to build a network from a config: a name registry, not an import path."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from vidxai.errors import ConfigError
from vidxai.models.convlstm import ConvLSTM
from vidxai.models.hf_video import VJEPA2, TimeSformer, VideoMAE, VideoPrism, ViViT
from vidxai.models.r2plus1d import R2Plus1D
from vidxai.models.vgg16_lstm import VGG16LSTM

__all__ = ["NETWORKS", "build_network", "check_network"]

#: Architectures that ``build_network`` (and therefore checkpoints and configs) may name.
NETWORKS: dict[str, type[nn.Module]] = {
    "vgg16_lstm": VGG16LSTM, "convlstm": ConvLSTM, "r2plus1d": R2Plus1D, "videomae": VideoMAE,
    "timesformer": TimeSformer, "vivit": ViViT, "vjepa2": VJEPA2, "videoprism": VideoPrism,
}


def check_network(arch: str, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Check a network config without building it: known ``arch``, accepted arguments, and (networks with a
    ``check_config`` static method) files such as pretrained weights; with ``data`` (the data config), networks
    with a ``check_data(data, **kwargs)`` method check that the clips it makes fit them. Raises
    ``ConfigError`` / ``MissingPathError`` with one clear line."""
    cls = _network_class(arch, kwargs)
    check = getattr(cls, "check_config", None)
    if check is not None:
        check(**kwargs)
    check_data = getattr(cls, "check_data", None)
    if data is not None and check_data is not None:
        check_data(data, **kwargs)


def _network_class(arch: str, kwargs: dict[str, Any]) -> type[nn.Module]:
    if arch not in NETWORKS:
        raise ConfigError(f"unknown network arch={arch!r}; choose one of {sorted(NETWORKS)}")
    cls = NETWORKS[arch]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "num_classes")]
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise ConfigError(f"network {arch!r} got unknown argument(s) {bad}; it accepts {accepted}")
    return cls


def build_network(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``arch`` with ``num_classes`` outputs and its keyword arguments.

    Raises:
        ValueError: unknown ``arch`` (the message lists the known ones) or an argument the network
            does not take (the message names it and lists the accepted ones); both are ``ConfigError``.
    """
    return _network_class(arch, kwargs)(num_classes=num_classes, **kwargs)
