"""Convolutional LSTM video classifier (Shi et al. 2015).

The cell is structurally identical to ``torch.nn.LSTM`` with its matrix products replaced by one
convolution over ``cat([x_t, h_{t-1}])``: the same gate order (i, f, g, o), the same update
``c = f*c + i*g``, ``h = o*tanh(c)``. Shi et al.'s peephole terms (``W_ci * c`` in the gates) are
left out: they only feed the gates, which receive no relevance under the LSTM-LRP rule of Arras et
al. 2017, and without them a single rule implementation serves both ``nn.LSTM`` and this cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage, run_cells
from vidxai.models.vgg16_lstm import check_video
from vidxai.models.weights import check_weights_file

__all__ = ["ConvLSTM", "ConvLSTMCell"]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``conv(cat([x, h]))`` gives the gates (i, f, g, o) in PyTorch's order.

    Args:
        in_channels: channels of the input ``x``.
        hidden_channels: channels of the hidden and cell states.
        kernel_size: odd square kernel; padding keeps the spatial size.
        bias: learn a bias for the gate convolution (it plays ``b_ih + b_hh`` of ``nn.LSTM``).
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"ConvLSTMCell kernel_size must be odd and positive, got {kernel_size}")
        if in_channels < 1 or hidden_channels < 1:
            raise ConfigError(
                f"ConvLSTMCell needs in_channels, hidden_channels >= 1, got {in_channels}, {hidden_channels}"
            )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=bias,
        )

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)`` matching an input ``x`` of shape ``(B, C_in, H, W)``."""
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden_channels, h, w)
        return zeros, zeros.clone()

    def gates(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Activated gates ``(i, f, g, o)`` for input ``x`` and previous hidden state ``h``."""
        i, f, g, o = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x (B, C_in, H, W)``, ``state=(h, c)`` (zeros if None) -> new ``(h, c)``."""
        h, c = self.init_state(x) if state is None else state
        i, f, g, o = self.gates(x, h)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Per-frame conv stem -> stacked ConvLSTM cells over time -> global pool + dropout + linear head.

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input frames.
        hidden_channels: hidden channels of each stacked cell (layer ``l`` reads layer ``l-1``'s hidden
            sequence).
        kernel_size: kernel of every cell's gate convolution.
        stem_channels: output channels of the per-frame stem ``Conv2d(3x3) -> ReLU -> MaxPool2d``;
            0 means no stem (``encoder = nn.Identity()``).
        stem_pool: max-pooling factor of the stem (1 = no pooling).
        dropout: dropout before the linear head.
        freeze_encoder: no gradients for the stem (e.g. to train on cached stem features).
        weights_path: initial weights: a state dict of this network, or a vidxai checkpoint (its ``net.*``
            weights); tensors whose shape differs (e.g. the head for another class count) keep their init.

    The defaults (130,091 parameters for 11 classes) are small and fast on CPU. A preset close to
    the paper's 1,280,239 parameters (11 classes): ``hidden_channels=(120, 96), stem_channels=0``
    (cells on the raw frames, as Keras' ConvLSTM2D) gives 1,279,787.

    Input ``(B, T, in_channels, H, W)`` float; output logits ``(B, num_classes)``. Initial states are zero.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden_channels: Sequence[int] = (32, 32),
        kernel_size: int = 3,
        stem_channels: int = 16,
        stem_pool: int = 2,
        dropout: float = 0.5,
        freeze_encoder: bool = False,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden_channels]
        if num_classes < 1 or not hidden:
            raise ConfigError(
                f"ConvLSTM needs num_classes >= 1 and at least one hidden_channels entry, "
                f"got num_classes={num_classes}, hidden_channels={hidden_channels}"
            )
        if stem_channels < 0 or stem_pool < 1:
            raise ConfigError(
                f"ConvLSTM needs stem_channels >= 0 and stem_pool >= 1, got {stem_channels}, {stem_pool}"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        if stem_channels > 0:
            stem: list[nn.Module] = [
                nn.Conv2d(in_channels, stem_channels, 3, padding=1),
                nn.ReLU(inplace=False),
            ]
            if stem_pool > 1:
                stem.append(nn.MaxPool2d(stem_pool))
            self.encoder: nn.Module = nn.Sequential(*stem)
            cell_in = stem_channels
        else:
            self.encoder = nn.Identity()
            cell_in = in_channels
        self.num_features = cell_in
        cells = []
        for h in hidden:
            cells.append(ConvLSTMCell(cell_in, h, kernel_size))
            cell_in = h
        self.cells = nn.ModuleList(cells)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(hidden[-1], num_classes)
        )
        self.freeze_encoder = bool(freeze_encoder)
        if weights_path is not None:
            self.load_weights(weights_path)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @staticmethod
    def check_config(weights_path: str | None = None, **_: Any) -> None:
        """Fail early (before data or model) when ``weights_path`` does not exist."""
        check_weights_file(False, weights_path, Path("."), "", "ConvLSTM")

    def load_weights(self, weights_path: str | Path) -> None:
        """Initialise from a ConvLSTM state dict or a vidxai checkpoint; same-shaped tensors only."""
        path = Path(weights_path).expanduser()
        check_weights_file(False, str(path), path, "", "ConvLSTM")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - corrupt or not a torch file
            raise ConfigError(f"cannot read ConvLSTM weights {path}: {err}") from err
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"ConvLSTM weights {path} hold a {type(state).__name__}, expected a state dict")
        if any(str(k).startswith("net.") for k in state):
            state = {k[len("net."):]: v for k, v in state.items() if str(k).startswith("net.")}
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if not usable:
            raise ConfigError(f"ConvLSTM weights {path} match none of this network's tensors: check "
                              "hidden_channels, stem_channels and kernel_size")
        self.load_state_dict(usable, strict=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame stem feature maps: ``(B, T, C, H, W) -> (B, T, C', H', W')``."""
        check_video(x)
        b, t, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"ConvLSTM expects {self.in_channels} input channels, got {c} (shape {tuple(x.shape)})"
            )
        y = self.encoder(x.reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:])

    def recurrence(self, feats: torch.Tensor) -> torch.Tensor:
        """Run the stacked cells over time: ``(B, T, C', H', W')`` -> last layer's hidden sequence."""
        return run_cells(self.cells, feats)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from per-frame stem features (the last layer's final hidden state)."""
        return self.head(self.recurrence(feats)[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from the last layer's final hidden state."""
        return self.classify(self.features(x))

    def explain_stages(self) -> tuple[Stage, ...]:
        """The explainer contract (:mod:`vidxai.models.contract`): stem per frame, ConvLSTM cells, head."""
        return (Stage("encoder", "frames", self.encoder), Stage("cells", "recurrent", self.cells),
                Stage("head", "head", self.head))
