"""R(2+1)D-18 (Tran et al., CVPR 2018): a 3D CNN over the whole clip, torchvision's ``r2plus1d_18`` layout.

Built from torchvision's own modules (``R2Plus1dStem``, ``BasicBlock``, ``Conv2Plus1D`` of
``torchvision.models.video.resnet``) with the attribute names of its ``VideoResNet`` (``stem``,
``layer1`` .. ``layer4``, ``avgpool``, ``fc``), so the state-dict keys are torchvision's and its
Kinetics-400 weights load from the local torch hub cache. ``width`` scales every channel count, so a
narrow copy of the same network trains on a CPU; the pretrained weights need ``width=1``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage
from vidxai.models.vgg16_lstm import check_video
from vidxai.models.weights import check_weights_file, hub_weights_file, load_state_file

__all__ = ["R2Plus1D", "r2plus1d_weights_file"]

#: Output channels of the stem's spatial convolution and of ``layer1`` .. ``layer4`` at ``width=1``.
STEM_MID_CHANNELS = 45
LAYER_CHANNELS = (64, 128, 256, 512)
#: Residual blocks per layer: the 18-layer network.
LAYER_BLOCKS = (2, 2, 2, 2)


def _weights_url() -> str:
    from torchvision.models.video import R2Plus1D_18_Weights

    return R2Plus1D_18_Weights.KINETICS400_V1.url


def r2plus1d_weights_file() -> Path:
    """Where torchvision's Kinetics-400 R(2+1)D-18 weights are expected in the local hub cache."""
    return hub_weights_file(_weights_url())


def _stem(mid: int, out: int) -> nn.Sequential:
    """torchvision's ``R2Plus1dStem`` (45 -> 64 channels at full width), or the same layers narrower."""
    if (mid, out) == (STEM_MID_CHANNELS, LAYER_CHANNELS[0]):
        return R2Plus1dStem()
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, out, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(out),
        nn.ReLU(inplace=True),
    )


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One residual layer as torchvision's ``VideoResNet._make_layer`` builds it for ``Conv2Plus1D``."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, planes, kernel_size=1, stride=Conv2Plus1D.get_downsample_stride(stride), bias=False),
            nn.BatchNorm3d(planes),
        )
    layers = [BasicBlock(inplanes, planes, Conv2Plus1D, stride, downsample)]
    layers += [BasicBlock(planes, planes, Conv2Plus1D) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class R2Plus1D(nn.Module):
    """R(2+1)D-18: (2+1)D stem, four residual layers of two ``BasicBlock`` each, global average pool, linear.

    Args:
        num_classes: number of output classes.
        width: multiplier of every channel count (stem 45 -> 64, layers 64/128/256/512 at ``width=1``,
            31.3 M parameters for 11 classes). ``width=0.25`` (16/32/64/128 channels, 2.0 M parameters)
            trains on the synthetic data on a CPU. The ``(2+1)D`` mid-channel counts follow torchvision's
            formula, so ``width=1`` is exactly torchvision's ``r2plus1d_18``.
        pretrained: load torchvision's Kinetics-400 weights (all but ``fc``) from the local torch hub cache
            (``torch.hub.get_dir()/checkpoints/r2plus1d_18-91a641e6.pth``) or ``weights_path``; never
            downloads. Needs ``width=1``.
        weights_path: explicit path of the weights file (a torchvision ``r2plus1d_18`` state dict).
        dropout: dropout before ``fc`` (torchvision has none: 0).

    Input ``(B, T, 3, H, W)`` float as for the other networks (permuted to ``(B, 3, T, H, W)`` inside);
    output logits ``(B, num_classes)``. Space is downsampled 16x and time 8x (any ``T, H, W >= 1`` work;
    8 frames of 32x32 end as one 2x2 map).
    """

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        pretrained: bool = False,
        weights_path: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"R2Plus1D needs num_classes >= 1, got {num_classes}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
            raise ConfigError(f"R2Plus1D width must be a number in (0, 4], got {width!r}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"R2Plus1D dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.width = float(width)
        channels = [max(1, round(c * width)) for c in LAYER_CHANNELS]
        self.stem = _stem(max(1, round(STEM_MID_CHANNELS * width)), channels[0])
        inplanes = channels[0]
        for k, (planes, blocks) in enumerate(zip(channels, LAYER_BLOCKS), start=1):
            self.add_module(f"layer{k}", _layer(inplanes, planes, blocks, stride=1 if k == 1 else 2))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)
        self.num_features = channels[-1]
        self._init_weights()
        if pretrained or weights_path is not None:
            self.load_kinetics_weights(weights_path)

    def _init_weights(self) -> None:
        """torchvision's ``VideoResNet`` initialisation (Kaiming normal fan-out; BN 1/0; fc N(0, 0.01), 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @staticmethod
    def check_config(pretrained: bool = False, weights_path: str | None = None, **_: Any) -> None:
        """Fail early (before data or model) when the pretrained weights file that would be loaded is missing."""
        check_weights_file(pretrained, weights_path, r2plus1d_weights_file(), _weights_url(), "R(2+1)D-18")

    def load_kinetics_weights(self, weights_path: str | Path | None = None) -> None:
        """Load torchvision's Kinetics-400 weights (everything but ``fc``) from ``weights_path`` or the hub cache."""
        if self.width != 1.0:
            raise ConfigError(
                f"pretrained R(2+1)D-18 weights need width=1, got width={self.width:g}; "
                "set width=1 or pretrained=false"
            )
        path = Path(weights_path) if weights_path is not None else r2plus1d_weights_file()
        state = load_state_file(path, _weights_url(), "R(2+1)D-18")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k for k in self.state_dict() if not k.startswith("fc.")}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"R(2+1)D-18 weights {path} do not match torchvision's r2plus1d_18: "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
        try:
            self.load_state_dict(state, strict=False)
        except RuntimeError as err:
            detail = str(err).splitlines()[-1].strip()
            raise ValueError(f"R(2+1)D-18 weights {path} have wrong shapes: {detail}") from err

    def backbone(self) -> nn.Sequential:
        """The clip stage: stem, the four layers, global average pooling and flatten (modules shared)."""
        return nn.Sequential(
            OrderedDict(
                stem=self.stem, layer1=self.layer1, layer2=self.layer2, layer3=self.layer3,
                layer4=self.layer4, avgpool=self.avgpool, flatten=nn.Flatten(),
            )
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for clips ``(B, T, 3, H, W)``."""
        check_video(x)
        if x.shape[2] != 3:
            raise ValueError(f"R2Plus1D needs RGB frames (B, T, 3, H, W), got shape {tuple(x.shape)}")
        x = x.transpose(1, 2)  # (B, 3, T, H, W): torchvision's video layout
        for stage in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.avgpool):
            x = stage(x)
        return self.fc(self.dropout(x.flatten(1)))

    def explain_stages(self) -> tuple[Stage, ...]:
        """The explainer contract (:mod:`vidxai.models.contract`): the 3D CNN over the clip, then the head."""
        return (
            Stage("backbone", "clip", self.backbone()),
            Stage("head", "head", nn.Sequential(OrderedDict(dropout=self.dropout, fc=self.fc))),
        )
