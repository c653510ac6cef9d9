"""VGG16 + LSTM video classifier (the paper's main model).

Every frame goes through the VGG16 convolution stack (time folded into the batch), is
globally average-pooled to a 512-d vector, the LSTM reads the vector sequence, and a
linear head classifies its last hidden state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage
from vidxai.models.weights import check_weights_file, hub_weights_file, load_state_file

__all__ = ["VGG16_CFG", "VGG16LSTM", "check_video", "make_vgg16_features", "vgg16_weights_file"]

#: torchvision's VGG16 configuration "D": conv output channels, "M" = 2x2 max pooling.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

#: Number of features per frame that the encoder produces.
VGG16_NUM_FEATURES = 512


def check_video(x: torch.Tensor, name: str = "video") -> None:
    """Raise one clear ``ValueError`` unless ``x`` is a float clip batch ``(B, T, C, H, W)``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor (B, T, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be float (normalised clips), got {x.dtype}: apply the data module's VideoTransform"
        )


def make_vgg16_features(batch_norm: bool = False) -> list[nn.Module]:
    """The layers of torchvision's ``vgg16().features`` (or ``vgg16_bn``), with non-inplace ReLUs.

    Layer indices equal torchvision's, so its state-dict keys (``"0.weight"``, ...) load as-is.
    Initialisation follows torchvision's VGG (Kaiming normal, fan-out; zero bias; BN 1/0).
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=False))
        in_channels = int(v)
    return layers


def _vgg16_url(batch_norm: bool) -> str:
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    return (VGG16_BN_Weights if batch_norm else VGG16_Weights).IMAGENET1K_V1.url


def vgg16_weights_file(batch_norm: bool = False) -> Path:
    """Where torchvision's ImageNet VGG16 (or VGG16-BN) weights are expected in the local hub cache."""
    return hub_weights_file(_vgg16_url(batch_norm))


def _load_vgg16_state(path: Path, batch_norm: bool) -> dict[str, torch.Tensor]:
    """Read a VGG16 state dict (full torchvision model or ``features`` only); return the conv-stack part."""
    label = f"VGG16{'-BN' if batch_norm else ''}"
    return load_state_file(path, _vgg16_url(batch_norm), label, prefix="features.")


class VGG16LSTM(nn.Module):
    """VGG16 conv stack per frame -> LSTM over frames -> dropout + linear head on the last hidden state.

    Args:
        num_classes: number of output classes.
        hidden_size: LSTM hidden size. ``hidden_size=256`` gives 15,505,995 parameters for 11 classes;
            ``hidden_size=324`` gives 15,804,311, the closest to the paper's 15,802,955.
        num_layers: stacked LSTM layers.
        pretrained: load torchvision's ImageNet VGG16 weights from the local torch hub cache
            (``torch.hub.get_dir()/checkpoints``) or ``weights_path``; never downloads.
        freeze_encoder: no gradients for VGG16, and keep it in eval mode (BN statistics fixed).
        dropout: dropout before the linear head.
        batch_norm: use VGG16-BN (makes training from scratch feasible; LRP folds BN into the conv).
        weights_path: explicit path of the VGG16 weights file (full model or ``features`` state dict).

    Input ``(B, T, 3, H, W)`` float with ``H, W >= 32``; output logits ``(B, num_classes)``.
    ``encoder`` is one flat ``nn.Sequential``: torchvision's ``vgg16().features`` layers at the same
    indices (ReLUs not in-place), then ``AdaptiveAvgPool2d(1)`` and ``Flatten()``.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        pretrained: bool = False,
        freeze_encoder: bool = False,
        dropout: float = 0.5,
        batch_norm: bool = False,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or hidden_size < 1 or num_layers < 1:
            raise ConfigError(
                f"VGG16LSTM needs num_classes, hidden_size, num_layers >= 1, "
                f"got {num_classes}, {hidden_size}, {num_layers}"
            )
        self.num_classes = num_classes
        self.batch_norm = batch_norm
        self.freeze_encoder = freeze_encoder
        self.num_features = VGG16_NUM_FEATURES
        self.encoder = nn.Sequential(
            *make_vgg16_features(batch_norm), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.lstm = nn.LSTM(self.num_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        if pretrained or weights_path is not None:
            self.load_vgg16_weights(weights_path)
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    @staticmethod
    def check_config(pretrained: bool = False, weights_path: str | None = None, batch_norm: bool = False,
                     **_: Any) -> None:
        """Fail early (before data or model) when the pretrained weights file that would be loaded is missing."""
        label = f"VGG16{'-BN' if batch_norm else ''}"
        check_weights_file(pretrained, weights_path, vgg16_weights_file(batch_norm), _vgg16_url(batch_norm), label)

    def load_vgg16_weights(self, weights_path: str | Path | None = None) -> None:
        """Load ImageNet VGG16 conv weights into ``encoder`` from ``weights_path`` or the hub cache."""
        path = Path(weights_path) if weights_path is not None else vgg16_weights_file(self.batch_norm)
        state = _load_vgg16_state(path, self.batch_norm)
        conv_stack = nn.Sequential(*self.encoder[:-2])  # shares modules with the encoder
        expected = set(conv_stack.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            hint = " (is batch_norm set to match the weights?)"
            raise ConfigError(
                f"VGG16 weights {path} do not match VGG16{'-BN' if self.batch_norm else ''}: "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}{hint}"
            )
        try:
            conv_stack.load_state_dict(state)
        except RuntimeError as err:
            detail = str(err).splitlines()[-1].strip()
            raise ConfigError(f"VGG16 weights {path} have wrong shapes: {detail}") from err

    def train(self, mode: bool = True) -> VGG16LSTM:
        """Set training mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame VGG16 features: ``(B, T, 3, H, W) -> (B, T, 512)``."""
        check_video(x)
        b, t, c, h, w = x.shape
        if c != 3 or h < 32 or w < 32:
            raise ValueError(f"VGG16LSTM needs RGB frames of at least 32x32, got (C, H, W) = {(c, h, w)}")
        return self.encoder(x.reshape(b * t, c, h, w)).reshape(b, t, -1)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from a per-frame feature sequence ``(B, T, 512) -> (B, num_classes)``."""
        out, _ = self.lstm(feats)
        return self.head(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for clips ``(B, T, 3, H, W)``."""
        return self.classify(self.features(x))

    def explain_stages(self) -> tuple[Stage, ...]:
        """The explainer contract (:mod:`vidxai.models.contract`): VGG16 per frame, LSTM, head."""
        return (Stage("encoder", "frames", self.encoder), Stage("lstm", "recurrent", self.lstm),
                Stage("head", "head", self.head))
